from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from xt_engine.config import ContextEncoderConfig
from xt_engine.models.context.hyper import HyperContext, block_layout, hyper_attention, lsh_rank
from xt_engine.models.context.sliding_window import SlidingWindowContext


def _sequence(length: int = 48, dim: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, length, dim, generator=generator)
    positions = torch.stack([torch.arange(length) // 8, torch.arange(length) % 8], dim=1)
    return tokens, positions


def _config(kind: str, memory_tokens: int, depth: int = 2) -> ContextEncoderConfig:
    return ContextEncoderConfig(
        kind=kind, dim=32, depth=depth, num_heads=4, memory_tokens=memory_tokens
    )


def _run_chunked(encoder, tokens: torch.Tensor, positions: torch.Tensor, chunk: int):
    state = encoder.init_state(tokens.shape[0], tokens.device, tokens.dtype)
    parts = []
    for start in range(0, tokens.shape[1], chunk):
        out, state = encoder(
            tokens[:, start : start + chunk], positions[start : start + chunk], state
        )
        parts.append(out)
    return torch.cat(parts, dim=1), state


def _exact_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offset: int) -> torch.Tensor:
    lq, nk = q.shape[2], k.shape[2]
    allowed = torch.ones(lq, nk, dtype=torch.bool).tril(offset)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def test_hyper_and_sliding_window_are_one_function_below_threshold_and_window() -> None:
    """While the keys fit hyper's exact threshold and the sliding window (the context task
    suite: 256 tokens a scene, memory_tokens 1024), both kinds are exact causal attention over
    every earlier token in the same blocks: with the same weights, the same outputs (bitwise
    for a whole-sequence call; chunked, their memories' gradients sum in another order)."""
    torch.manual_seed(0)
    window = SlidingWindowContext(_config("sliding_window", 64)).eval()
    torch.manual_seed(0)
    hyper = HyperContext(_config("hyper", 64)).eval()
    # one seed, one initialisation: the suite's two cells at a seed start from the same weights
    shared = window.state_dict()
    assert all(torch.equal(hyper.state_dict()[key], value) for key, value in shared.items())
    missing, unexpected = hyper.load_state_dict(shared, strict=False)
    assert unexpected == [] and all(key.endswith("lsh_projection") for key in missing)
    tokens, positions = _sequence()
    for chunk in (48, 16):
        got, _ = _run_chunked(hyper, tokens, positions, chunk)
        want, _ = _run_chunked(window, tokens, positions, chunk)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert chunk < 48 or torch.equal(got, want)


# --- sliding window ----------------------------------------------------------------------------


@pytest.mark.parametrize("num_global", [0, 3])
@pytest.mark.parametrize("chunk", [1, 4, 10, 17, 48])
def test_sliding_window_chunks_equal_whole(chunk: int, num_global: int) -> None:
    torch.manual_seed(0)
    encoder = SlidingWindowContext(_config("sliding_window", 10), num_global=num_global).eval()
    tokens, positions = _sequence()
    whole, _ = encoder(tokens, positions, encoder.init_state(2, tokens.device, tokens.dtype))
    chunked, _ = _run_chunked(encoder, tokens, positions, chunk)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_sliding_window_state_is_bounded() -> None:
    encoder = SlidingWindowContext(_config("sliding_window", 6), num_global=2).eval()
    tokens, positions = _sequence(length=30)
    _, state = _run_chunked(encoder, tokens, positions, 7)
    assert state.seen == 30
    assert [r.shape[1] for r in state.recent] == [6, 6]
    assert [g.shape[1] for g in state.global_tokens] == [2, 2]
    torch.testing.assert_close(state.global_tokens[0], tokens[:, :2])  # first layer's inputs
    torch.testing.assert_close(state.recent[0], tokens[:, -6:])


@pytest.mark.parametrize("num_global", [0, 2])
def test_sliding_window_band_reaches_window_and_globals(num_global: int) -> None:
    window = 5
    torch.manual_seed(0)
    encoder = SlidingWindowContext(
        _config("sliding_window", window, depth=1), num_global=num_global
    ).eval()
    tokens, positions = _sequence(length=20)
    base, _ = encoder(tokens, positions, None)
    poked = tokens.clone()
    poked[:, 1] += torch.randn(2, 32)  # token 1 is global iff num_global > 1
    out, _ = encoder(poked, positions, None)
    changed = (out - base).abs().amax(dim=(0, 2)) > 1e-6  # (L,)
    expected = torch.zeros(20, dtype=torch.bool)
    expected[1 : 1 + window + 1] = True  # itself and the `window` tokens after it
    if num_global > 1:
        expected[1:] = True  # a global token is seen by every later token
    assert changed.tolist() == expected.tolist()


# --- hyper: exact path ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 5, 16, 48])
def test_hyper_exact_chunks_with_memory_equal_whole(chunk: int) -> None:
    torch.manual_seed(0)
    encoder = HyperContext(_config("hyper", 64)).eval()
    tokens, positions = _sequence()
    whole, _ = encoder(tokens, positions, encoder.init_state(2, tokens.device, tokens.dtype))
    chunked, state = _run_chunked(encoder, tokens, positions, chunk)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert [m.shape[1] for m in state.memory] == [48, 48]
    assert state.seen == 48


def test_hyper_approximate_path_with_one_block_is_exact() -> None:
    # above the threshold, but one block holds every key: nothing is left to sample
    torch.manual_seed(0)
    exact = HyperContext(_config("hyper", 16)).eval()
    approx = HyperContext(
        replace(_config("hyper", 16), hyper_exact_threshold=8, hyper_block_size=64)
    ).eval()
    approx.load_state_dict(exact.state_dict())
    tokens, positions = _sequence()
    want, _ = _run_chunked(exact, tokens, positions, 12)
    got, _ = _run_chunked(approx, tokens, positions, 12)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# --- hyper_attention -----------------------------------------------------------------------------


@pytest.mark.parametrize("look_back", [True, False])
@pytest.mark.parametrize("offset", [0, 23])
def test_hyper_attention_is_exact_when_every_key_is_sampled(offset: int, look_back: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 64 - offset, 16, generator=generator)
    k, v = (torch.randn(2, 3, 64, 16, generator=generator) for _ in range(2))
    projection = torch.randn(16, 4, generator=generator)
    got = hyper_attention(q, k, v, offset, projection, 8, 10**6, look_back=look_back)
    torch.testing.assert_close(got, _exact_causal(q, k, v, offset), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("look_back", [True, False])
def test_hyper_attention_masks_future_keys(look_back: bool) -> None:
    # the buckets depend on every query and key, but no query reads a later key's value
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 96, 16, generator=generator) for _ in range(3))
    projection = torch.randn(16, 4, generator=generator)

    def run(values: torch.Tensor) -> torch.Tensor:
        sampler = torch.Generator().manual_seed(1)
        return hyper_attention(q, k, values, 0, projection, 16, 32, sampler, look_back)

    base = run(v)
    poked = v.clone()
    poked[:, :, 50:] = torch.randn(1, 2, 46, 16, generator=generator) * 100
    out = run(poked)
    torch.testing.assert_close(out[:, :, :50], base[:, :, :50], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out[:, :, 50:], base[:, :, 50:])
    assert torch.isfinite(out).all()


def _clustered(offset: int, seed: int = 0):
    """8 clusters of 48 tokens, shuffled; LSH puts each cluster in its own bucket."""
    generator = torch.Generator().manual_seed(seed)
    clusters, size, dim, bits = 8, 48, 32, 7
    length = clusters * size
    projection = torch.randn(dim, bits, generator=generator)
    codes = torch.randperm(2**bits, generator=generator)[:clusters]
    signs = ((codes[:, None] >> torch.arange(bits)) & 1) * 2.0 - 1.0  # (C, bits)
    centers = torch.linalg.lstsq(projection.T, signs.T).solution.T  # centers @ projection = signs
    centers = F.normalize(centers, dim=-1)
    labels = torch.arange(clusters).repeat_interleave(size)[
        torch.randperm(length, generator=generator)
    ]

    def noisy() -> torch.Tensor:
        return (
            centers[labels] + 0.05 * torch.randn(length, dim, generator=generator) / dim**0.5
        ) * 8

    q, k = noisy()[offset:], noisy()
    v = torch.randn(length, dim, generator=generator)
    assert torch.equal(lsh_rank(k[offset:], projection), lsh_rank(q, projection))
    assert len(set(lsh_rank(k, projection).tolist())) == clusters
    return q[None, None], k[None, None], v[None, None], projection


@pytest.mark.parametrize("offset", [0, 100])
def test_hyper_attention_approximates_clustered_attention(offset: int) -> None:
    q, k, v, projection = _clustered(offset)
    exact = _exact_causal(q, k, v, offset)
    approx = hyper_attention(q, k, v, offset, projection, 64, 64, torch.Generator().manual_seed(1))
    counts = torch.arange(offset + 1, k.shape[2] + 1, dtype=torch.float32)[:, None]
    uniform = v.cumsum(2)[:, :, offset:] / counts  # causal uniform averaging

    def rel(x: torch.Tensor) -> float:
        return float((x - exact).norm() / exact.norm())

    assert rel(approx) < 0.3
    assert rel(approx) < 0.5 * rel(uniform)


def test_block_layout_is_subquadratic() -> None:
    assert block_layout(8192, 8192, 256) == (32, 256, 256)
    blocks, qb, kb = block_layout(8192, 8192 + 512, 256)
    assert blocks * qb >= 8192 and blocks * kb >= 8192 + 512 and qb <= 256
    # block scores (twice with look-back) stay ~ N * block_size, far below N ** 2
    assert 2 * blocks * qb * kb <= 2 * (8192 + 512 + blocks) * 256 < (8192 * 8192) // 10
    assert block_layout(1, 5000, 256) == (1, 1, 5000)  # one query: linear in the keys
    assert block_layout(100, 1124, 64) == (2, 50, 562)


def test_lsh_rank_is_inverse_gray_code() -> None:
    bits = 5
    codes = torch.arange(2**bits)
    patterns = ((codes[:, None] >> torch.arange(bits)) & 1).float() * 2 - 1  # (32, bits) of +-1
    rank = lsh_rank(patterns, torch.eye(bits))
    assert torch.equal(rank ^ (rank >> 1), codes)
    assert sorted(rank.tolist()) == codes.tolist()


def test_hyper_approximate_runs_on_long_sequence() -> None:
    torch.manual_seed(0)
    config = ContextEncoderConfig(
        kind="hyper",
        dim=64,
        depth=1,
        num_heads=4,
        memory_tokens=0,
        hyper_block_size=128,
        hyper_num_samples=128,
    )
    encoder = HyperContext(config).eval()
    tokens = torch.randn(1, 8192, 64)
    positions = torch.zeros(8192, 2, dtype=torch.long)
    with torch.no_grad():
        out, _ = encoder(tokens, positions, None)
    assert out.shape == tokens.shape and torch.isfinite(out).all()


# --- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: SlidingWindowContext(_config("sliding_window", 5, depth=1)),
        lambda: SlidingWindowContext(_config("sliding_window", 5, depth=1), num_global=2),
        lambda: HyperContext(_config("hyper", 8, depth=1)),
        lambda: HyperContext(
            replace(
                _config("hyper", 8, depth=1),
                hyper_exact_threshold=8,
                hyper_block_size=4,
                hyper_num_samples=4,
            )
        ),
    ],
    ids=["sliding", "sliding_global", "hyper_exact", "hyper_approx"],
)
def test_gradients_flow(make) -> None:
    torch.manual_seed(0)
    encoder = make()
    tokens, positions = _sequence(length=24)
    tokens.requires_grad_(True)
    state = encoder.init_state(2, tokens.device, tokens.dtype)
    first, state = encoder(tokens[:, :12], positions[:12], state)
    second, _ = encoder(tokens[:, 12:], positions[12:], state)
    torch.cat([first, second], dim=1).square().mean().backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()
    assert tokens.grad.abs().sum() > 0
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_hyper_projection_is_a_seeded_buffer() -> None:
    a = HyperContext(_config("hyper", 8))
    b = HyperContext(_config("hyper", 8))
    assert "blocks.0.lsh_projection" in dict(a.named_buffers())
    assert "lsh_projection" not in {n.rsplit(".", 1)[-1] for n, _ in a.named_parameters()}
    torch.testing.assert_close(a.blocks[0].lsh_projection, b.blocks[0].lsh_projection)
    assert not torch.equal(a.blocks[0].lsh_projection, a.blocks[1].lsh_projection)
    assert math.prod(a.blocks[0].lsh_projection.shape) == 8 * 7
