from __future__ import annotations

import math

import pytest
import torch

from xt_engine.config import ContextEncoderConfig
from xt_engine.errors import ConfigError
from xt_engine.models.context import build_context_encoder, sincos_position_embedding


def _sequence(length: int = 48, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randn(2, length, dim)
    positions = torch.stack([torch.arange(length) // 8, torch.arange(length) % 8], dim=1)
    return tokens, positions


@pytest.mark.parametrize("bias", ["none", "distance", "relative", "both"])
@pytest.mark.parametrize("chunk", [1, 5, 16, 48])
def test_transformer_xl_chunks_with_memory_equal_whole(chunk: int, bias: str) -> None:
    encoder = build_context_encoder(
        ContextEncoderConfig(
            kind="transformer_xl",
            dim=32,
            depth=2,
            num_heads=4,
            memory_tokens=64,
            distance_bias=bias in ("distance", "both"),
            relative_range=3 if bias in ("relative", "both") else 0,
        )
    ).eval()
    with torch.no_grad():  # non-zero relative biases, so the offsets' indexing is exercised
        for name, param in encoder.named_parameters():
            if name.endswith("relative_bias"):
                param.copy_(torch.randn_like(param))
    tokens, positions = _sequence()
    whole, _ = encoder(tokens, positions, encoder.init_state(2, tokens.device, tokens.dtype))
    state = encoder.init_state(2, tokens.device, tokens.dtype)
    parts = []
    for start in range(0, tokens.shape[1], chunk):
        out, state = encoder(
            tokens[:, start : start + chunk], positions[start : start + chunk], state
        )
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=1e-5)


def test_transformer_xl_memory_is_carried_and_bounded() -> None:
    encoder = build_context_encoder(
        ContextEncoderConfig(kind="transformer_xl", dim=32, depth=2, num_heads=4, memory_tokens=10)
    ).eval()
    tokens, positions = _sequence(length=24)
    state = encoder.init_state(2, tokens.device, tokens.dtype)
    first, state = encoder(tokens[:, :12], positions[:12], state)
    assert [m.shape[1] for m in state.memory] == [10, 10]
    torch.testing.assert_close(state.positions, positions[2:12])
    # the same second chunk gives different outputs with and without the carried memory
    with_memory, _ = encoder(tokens[:, 12:], positions[12:], state)
    fresh, _ = encoder(
        tokens[:, 12:], positions[12:], encoder.init_state(2, tokens.device, tokens.dtype)
    )
    assert not torch.allclose(with_memory, fresh, atol=1e-4)


def test_distance_bias_favours_near_keys_and_fused_path_matches_reference() -> None:
    config = ContextEncoderConfig(
        kind="transformer_xl", dim=32, depth=1, num_heads=4, memory_tokens=64, distance_bias=True
    )
    encoder = build_context_encoder(config).eval()
    attention = encoder.layers[0].attn
    torch.testing.assert_close(
        attention.log_slopes.exp(), torch.tensor([0.5, 0.125, 1 / 32, 1 / 128])
    )
    tokens, positions = _sequence(length=40)
    state = encoder.init_state(2, tokens.device, tokens.dtype)
    fused, _ = encoder(tokens, positions, state)
    explicit, _, weights = encoder.forward_with_attention(tokens, positions, state)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    # with equal tokens the scores are equal, so only the bias decides: the last query attends
    # most to itself and less the farther a key lies in the 2-D grid
    same = torch.zeros(1, 40, 32)
    _, _, weights = encoder.forward_with_attention(
        same, positions, encoder.init_state(1, "cpu", torch.float32)
    )
    last = weights[0, -1]
    distance = (positions[-1] - positions).float().norm(dim=1)
    assert last.argmax() == 39
    order = distance.argsort()
    assert (last[order][1:] <= last[order][:-1] + 1e-6).all()


@pytest.mark.skipif(
    not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"),
    reason="this torch has no CPU flash attention kernel",
)
@pytest.mark.parametrize("bias", ["none", "distance", "relative"])
def test_biased_attention_runs_the_fused_cpu_kernel(bias: str) -> None:
    """A float score bias (distance, relative) must not send CPU SDPA to its math path (a
    3-D mask did: ~3.7x slower); the fused output equals the explicit reference."""
    from torch.profiler import profile

    encoder = build_context_encoder(
        ContextEncoderConfig(
            kind="transformer_xl",
            dim=32,
            depth=1,
            num_heads=4,
            memory_tokens=64,
            distance_bias=bias == "distance",
            relative_range=3 if bias == "relative" else 0,
        )
    ).eval()
    tokens, positions = _sequence(length=40)
    state = encoder.init_state(2, tokens.device, tokens.dtype)
    with torch.inference_mode(), profile() as prof:
        fused, _ = encoder(tokens, positions, state)
    ops = {event.key for event in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops
    assert "aten::_scaled_dot_product_attention_math" not in ops
    with torch.inference_mode():
        explicit, _, _ = encoder.forward_with_attention(tokens, positions, state)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_distance_bias_only_for_transformer_xl() -> None:
    from xt_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="distance_bias"):
        ContextEncoderConfig(kind="hyper", distance_bias=True).validate()


@pytest.mark.parametrize("kind", ["none", "transformer_xl"])
def test_gradients_flow(kind: str) -> None:
    encoder = build_context_encoder(
        ContextEncoderConfig(
            kind=kind,
            dim=32,
            depth=1,
            num_heads=4,
            distance_bias=kind == "transformer_xl",
            relative_range=2 if kind == "transformer_xl" else 0,
        )
    )
    tokens, positions = _sequence(length=12)
    tokens.requires_grad_(True)
    out, _ = encoder(tokens, positions, encoder.init_state(2, tokens.device, tokens.dtype))
    out.square().mean().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_sincos_embedding_distinguishes_rows_and_columns() -> None:
    emb = sincos_position_embedding(torch.tensor([[0, 1], [1, 0], [0, 0]]), 16)
    assert emb.shape == (3, 16)
    assert not torch.allclose(emb[0], emb[1])
    torch.testing.assert_close(emb[2, :8], emb[0, :8])  # same row -> same row half


def test_bidirectional_two_pass_streaming_equals_whole_call() -> None:
    config = ContextEncoderConfig(
        kind="transformer_xl", dim=32, depth=1, num_heads=4, memory_tokens=64, bidirectional=True
    )
    encoder = build_context_encoder(config).eval()
    tokens, positions = _sequence(length=30)
    whole, _ = encoder(tokens, positions, None)
    fwd_state, bwd_state = encoder.init_state(2, tokens.device, tokens.dtype)
    bounds = [(0, 7), (7, 19), (19, 30)]
    forward_parts = {}
    for start, stop in bounds:
        forward_parts[start], fwd_state = encoder.forward_direction(
            tokens[:, start:stop], positions[start:stop], fwd_state
        )
    merged = {}
    for start, stop in reversed(bounds):
        backward, bwd_state = encoder.backward_direction(
            tokens[:, start:stop], positions[start:stop], bwd_state
        )
        merged[start] = encoder.merge(forward_parts[start], backward)
    streamed = torch.cat([merged[start] for start, _ in bounds], dim=1)
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-5)


def test_bidirectional_context_reaches_earlier_tokens_from_later_ones() -> None:
    config = ContextEncoderConfig(kind="transformer_xl", dim=32, depth=1, num_heads=4)
    tokens, positions = _sequence(length=20)
    changed = tokens.clone()
    changed[:, -1] += 5.0  # perturb only the last token
    for bidirectional, expect_change in ((False, False), (True, True)):
        config.bidirectional = bidirectional
        encoder = build_context_encoder(config).eval()
        a, _ = encoder(tokens, positions, None)
        b, _ = encoder(changed, positions, None)
        assert bool((a[:, 0] - b[:, 0]).abs().max() > 1e-4) is expect_change


def test_relative_bias_reads_the_entry_of_each_offset() -> None:
    from xt_engine.models.context.transformer_xl import CausalMemoryAttention, ChunkKeys

    attn = CausalMemoryAttention(8, 1, relative_range=2).eval()
    with torch.no_grad():
        attn.qkv.weight.zero_()  # equal scores: the attention is the softmax of the bias alone
        attn.qkv.bias.zero_()
        attn.relative_bias.zero_()
        attn.relative_bias[0, 2 + 2, 2 + 0] = 30.0  # the key 2 rows above the query (dy = +2)
    positions = torch.tensor([[0, 0], [1, 0], [2, 0], [5, 0]])
    keys = ChunkKeys.build(positions, positions, relative_range=2)
    x = torch.randn(1, 4, 8)
    _, weights = attn(x, x[:, :0], need_weights=True, keys=keys)
    assert weights is not None
    assert weights[0, 2, 0] > 0.99  # row 2 attends to row 0
    # row 5: offsets 5, 4, 3 (to rows 0-2) clip to 2 and share that entry; 0 to itself
    torch.testing.assert_close(weights[0, 3, :3], torch.full((3,), weights[0, 3, 0].item()))
    # the table is scaled by RELATIVE_BIAS_GAIN: an entry of ln(3) / gain makes one of two keys
    # three times as likely as the other (hand-derived: e^ln3 / (e^ln3 + 1) = 0.75)
    from xt_engine.models.context.transformer_xl import RELATIVE_BIAS_GAIN

    with torch.no_grad():
        attn.relative_bias.zero_()
        attn.relative_bias[0, 2 + 1, 2 + 0] = math.log(3) / RELATIVE_BIAS_GAIN
    two = torch.tensor([[0, 0], [1, 0]])
    keys = ChunkKeys.build(two, two, relative_range=2)
    _, weights = attn(x[:, :2], x[:, :0], need_weights=True, keys=keys)
    assert weights is not None
    torch.testing.assert_close(weights[0, 1], torch.tensor([0.75, 0.25]))
    with pytest.raises(ConfigError, match="relative_range"):
        ContextEncoderConfig(kind="mamba", relative_range=2).validate()


@pytest.mark.parametrize("distance_bias,relative_range", [(True, 0), (False, 2), (True, 2)])
def test_score_bias_formed_once_per_chunk_equals_its_definition(
    distance_bias: bool, relative_range: int
) -> None:
    """:class:`ChunkKeys` (built once per chunk) + a layer's ``score_bias`` equal the bias
    written entry by entry: ``-slope_h * |p_i - p_j| + gain * table_h[clip(dy), clip(dx)]`` for
    keys j <= M + i, ``-inf`` after."""
    from xt_engine.models.context.transformer_xl import (
        RELATIVE_BIAS_GAIN,
        CausalMemoryAttention,
        ChunkKeys,
    )

    heads, memory, length = 2, 3, 4
    attn = CausalMemoryAttention(8, heads, distance_bias, relative_range)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if attn.log_slopes is not None:
            attn.log_slopes.copy_(torch.randn(heads, generator=generator))
        if attn.relative_bias is not None:
            attn.relative_bias.copy_(torch.randn(attn.relative_bias.shape, generator=generator))
    key_positions = torch.randint(0, 6, (memory + length, 2), generator=generator)
    keys = ChunkKeys.build(key_positions[memory:], key_positions, distance_bias, relative_range)
    with torch.no_grad():
        bias = attn.score_bias(keys)
    assert bias is not None and bias.shape == (heads, length, memory + length)
    reach = relative_range
    for h in range(heads):
        for i in range(length):
            for j in range(memory + length):
                if j > memory + i:
                    assert bias[h, i, j] == float("-inf")
                    continue
                dy, dx = (key_positions[memory + i] - key_positions[j]).tolist()
                want = 0.0
                if distance_bias:
                    slope = math.exp(attn.log_slopes[h].item())  # type: ignore[union-attr]
                    want -= slope * math.hypot(dy, dx)
                if relative_range:
                    row, col = (
                        min(max(dy, -reach), reach) + reach,
                        min(max(dx, -reach), reach) + reach,
                    )
                    want += RELATIVE_BIAS_GAIN * attn.relative_bias[h, row, col].item()  # type: ignore[index]
                assert bias[h, i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-5)
