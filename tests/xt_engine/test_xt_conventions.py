"""xT's conventions as config switches (fast, tiny models); parity itself: test_xt_parity.py.

Each switch is checked against a direct transcription of what the official xT code does:
MAE's 2-D sin-cos embedding, the stitched row-major token map, the cls token appended to the
one sequence, LlamaMLP's GELU gate and LlamaRMSNorm's eps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xt_engine.config import XTConfig
from xt_engine.errors import InputError
from xt_engine.models import create_model, model_config
from xt_engine.models.context import sincos_position_embedding
from xt_engine.models.xt_model import image_token_order


def _mae_2d_sincos(dim: int, grid: int) -> np.ndarray:
    """MAE's ``get_2d_sincos_pos_embed(dim, grid)`` (numpy, as xT calls it)."""

    def one(d: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(d // 2, dtype=np.float32) / (d / 2.0)
        out = np.einsum("m,d->md", pos.reshape(-1), 1.0 / 10000**omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.arange(grid, dtype=np.float32)
    mesh = np.stack(np.meshgrid(g, g), axis=0).reshape(2, 1, grid, grid)  # w goes first
    return np.concatenate([one(dim // 2, mesh[0]), one(dim // 2, mesh[1])], axis=1)


def test_col_row_order_is_maes_embedding_and_row_col_is_unchanged() -> None:
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    positions = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)  # row-major
    ours = sincos_position_embedding(positions, 32, "col_row")
    np.testing.assert_allclose(ours.numpy(), _mae_2d_sincos(32, 6), atol=1e-5)
    row_col = sincos_position_embedding(positions, 32)
    torch.testing.assert_close(row_col[:, :16], ours[:, 16:])
    torch.testing.assert_close(row_col[:, 16:], ours[:, :16])
    with pytest.raises(ValueError, match="order"):
        sincos_position_embedding(positions, 32, "xy")


def test_image_order_is_the_row_major_flattening_of_the_stitched_map() -> None:
    gh = gw = 3
    rc = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])  # 2 x 2 regions in raster order
    local = torch.stack(
        torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij"), dim=-1
    ).reshape(-1, 2)
    positions = (rc[:, None] * gh + local[None]).reshape(-1, 2)
    order = image_token_order(positions)
    stitched = positions[order]
    expected = torch.stack(
        torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij"), dim=-1
    ).reshape(-1, 2)
    torch.testing.assert_close(stitched, expected)


def _whole_sequence_model(kind: str = "transformer_xl", **context: object) -> torch.nn.Module:
    config = model_config("test_convnext_txl_cls").to_dict()
    config["context_encoder"] |= {
        "kind": kind,
        "token_order": "image",
        "position_order": "col_row",
        "final_norm": False,
        # xT's position handling (this project's defaults add 2-D biases and scale positions)
        "distance_bias": False,
        "relative_range": 0,
        "position_scale": 1.0,
    } | context
    config["head"]["pool"] = "cls"
    return create_model(XTConfig.from_dict(config)).eval()


@pytest.mark.parametrize("kind", ["transformer_xl", "mamba"])
def test_whole_sequence_model_runs_xts_one_sequence(kind: str) -> None:
    """Tokens of all regions in stitched row-major order, the cls token appended; region
    outputs come back region by region and ``finish`` reads the cls output."""
    extra = {"layout": "xt"} if kind == "mamba" else {"mlp_activation": "gelu", "norm_eps": 1e-5}
    model = _whole_sequence_model(kind, **extra)
    assert model.whole_sequence
    pixels = torch.rand(1, 4, 3, 64, 64)
    rc = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    with torch.inference_mode():
        outputs, state = model(pixels, rc, model.init_state())
        logits = model.finish(state)
        # the same by hand: stitch, flatten row-major, append cls, run, read
        _, tokens, positions = model.encode(pixels, rc)
        order = torch.argsort(positions[:, 0] * 100 + positions[:, 1])
        sequence = torch.cat([tokens[:, order], model.head.cls_token], dim=1)
        zeros = torch.zeros(sequence.shape[1], 2, dtype=torch.long)
        out, _ = model.context_encoder(sequence, zeros, None)
        torch.testing.assert_close(logits, model.head(out[:, -1]))
    back = torch.empty_like(out[:, :-1])
    back[:, order] = out[:, :-1]
    torch.testing.assert_close(outputs.tokens, back)


def test_whole_sequence_refuses_a_second_chunk_and_too_many_tokens() -> None:
    model = _whole_sequence_model(max_sequence_tokens=8)
    rc = torch.tensor([[0, 0], [0, 1]])
    with torch.inference_mode():
        _, state = model(torch.rand(1, 2, 3, 64, 64), rc, model.init_state())
        with pytest.raises(InputError, match="second chunk.*fix: pass every region"):
            model(torch.rand(1, 2, 3, 64, 64), rc + 1, state)
        with pytest.raises(InputError, match="max_sequence_tokens=8"):
            three = torch.tensor([[0, 0], [0, 1], [0, 2]])  # 3 x 2 x 2 tokens > 8
            model(torch.rand(1, 3, 3, 64, 64), three, model.init_state())


def test_streaming_models_are_not_whole_sequence() -> None:
    assert not create_model("test_convnext_txl_cls").whole_sequence
    assert not create_model("test_convnext_mamba").whole_sequence
    mamba_xt = model_config("test_convnext_mamba")
    mamba_xt.context_encoder.layout = "xt"
    assert create_model(mamba_xt).whole_sequence


def test_gelu_gate_and_norm_eps_reach_every_layer() -> None:
    model = _whole_sequence_model(mlp_activation="gelu", norm_eps=1e-5, depth=2)
    x = torch.randn(2, 5, 32)
    for layer in model.context_encoder.layers:
        assert layer.input_layernorm.eps == layer.post_attention_layernorm.eps == 1e-5
        mlp = layer.mlp
        expected = mlp.down_proj(F.gelu(mlp.gate_proj(x)) * mlp.up_proj(x))
        torch.testing.assert_close(mlp(x), expected)
    silu = create_model("test_convnext_txl").context_encoder.layers[0]
    assert silu.input_layernorm.eps == 1e-6
    torch.testing.assert_close(
        silu.mlp(x), silu.mlp.down_proj(F.silu(silu.mlp.gate_proj(x)) * silu.mlp.up_proj(x))
    )


@pytest.mark.parametrize("kind", ["transformer_xl", "mamba"])
def test_whole_sequence_attention_is_per_region_token_without_the_cls(kind: str) -> None:
    model = _whole_sequence_model(kind, **({"layout": "xt"} if kind == "mamba" else {}))
    pixels, rc = torch.rand(1, 2, 3, 64, 64), torch.tensor([[0, 0], [0, 1]])
    with torch.inference_mode():
        plain, state = model(pixels, rc, model.init_state())
        seen, seen_state = model(pixels, rc, model.init_state(), need_attention=True)
        torch.testing.assert_close(model.finish(seen_state), model.finish(state))
    torch.testing.assert_close(seen.tokens, plain.tokens)
    assert seen.attention.shape == (2, *model.token_grid) and bool((seen.attention >= 0).all())
