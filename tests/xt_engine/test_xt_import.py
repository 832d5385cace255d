"""Import of released xT checkpoints: a state dict with exactly the released names and shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from xt_engine import CheckpointError, load_checkpoint
from xt_engine.cli import main
from xt_engine.weights.xt_import import convert_xt_state_dict


def _released_like_state(depth: int = 2, classes: int = 284) -> dict[str, torch.Tensor]:
    """Names and shapes of a released xT iNat checkpoint (SwinV2-T backbone, D = 768)."""
    backbone = timm.create_model("swinv2_tiny_window8_256", features_only=True, img_size=256)
    state = {
        f"module.encoder.model.{k}": torch.randn_like(v) if v.is_floating_point() else v
        for k, v in backbone.state_dict().items()
    }
    d = 768
    for i in range(depth):
        p = f"module.decoder.layers.{i}."
        state |= {
            p + "attn.qkv.weight": torch.randn(3 * d, d),
            p + "attn.qkv.bias": torch.randn(3 * d),
            p + "attn.proj.weight": torch.randn(d, d),
            p + "attn.proj.bias": torch.randn(d),
            p + "input_layernorm.weight": torch.rand(d),
            p + "post_attention_layernorm.weight": torch.rand(d),
            p + "mlp.gate_proj.weight": torch.randn(4 * d, d),
            p + "mlp.up_proj.weight": torch.randn(4 * d, d),
            p + "mlp.down_proj.weight": torch.randn(d, 4 * d),
        }
    state |= {
        "module.decoder.input_proj.weight": torch.randn(d, 768),
        "module.decoder.input_proj.bias": torch.randn(d),
        "module.decoder.cls_token": torch.randn(1, 1, d),
        "module.decoder.cls.0.weight": torch.rand(d),
        "module.decoder.cls.0.bias": torch.randn(d),
        "module.decoder.cls.1.weight": torch.randn(classes, d),
        "module.decoder.cls.1.bias": torch.randn(classes),
    }
    return state


def test_every_released_tensor_lands_in_the_model() -> None:
    state = _released_like_state()
    model = convert_xt_state_dict(state, backbone="swinv2_tiny_window8_256")
    cfg = model.config
    assert (cfg.context_encoder.kind, cfg.context_encoder.dim, cfg.context_encoder.depth) == (
        "transformer_xl",
        768,
        2,
    )
    assert cfg.head.task == "classification" and cfg.head.num_classes == 284
    assert cfg.head.pool == "cls" and cfg.context_encoder.final_norm is False
    ours = model.state_dict()
    placed = 0
    for key, value in state.items():
        new = (
            key.removeprefix("module.")
            .replace("encoder.model.", "region_encoder.backbone.", 1)
            .replace("decoder.input_proj.", "input_proj.", 1)
            .replace("decoder.layers.", "context_encoder.layers.", 1)
            .replace("decoder.cls_token", "head.cls_token", 1)
            .replace("decoder.cls.", "head.cls.", 1)
        )
        if new in ours:
            torch.testing.assert_close(ours[new], value)
            placed += 1
    assert placed >= len(state) - 8 * 4  # all but timm's derived, non-persistent buffers
    with torch.inference_mode():
        out, st = model(
            torch.rand(1, 2, 3, 256, 256), torch.tensor([[0, 0], [0, 1]]), model.init_state()
        )
        assert model.finish(st).shape == (1, 284)


def test_unknown_tensor_or_wrong_file_is_refused() -> None:
    state = _released_like_state(depth=1, classes=3)
    state["module.decoder.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="no place in the model"):
        convert_xt_state_dict(state, backbone="swinv2_tiny_window8_256")
    with pytest.raises(CheckpointError, match="not an xT checkpoint"):
        convert_xt_state_dict({"w": torch.zeros(1)})


def test_cli_converts_a_pickle_under_state_dict(tmp_path: Path) -> None:
    src = tmp_path / "xt_inat.pth"
    torch.save({"state_dict": _released_like_state(depth=1, classes=7), "epoch": 3}, src)
    out = tmp_path / "xt_inat.safetensors"
    assert main(["import-xt-checkpoint", str(src), str(out)]) == 0  # backbone auto-detected
    model = load_checkpoint(out)
    # the window size leaves no trace in SwinV2 weights: size detected, window 16 by default
    assert model.config.region_encoder.name == "swinv2_tiny_window16_256"
    assert model.config.head.num_classes == 7


def _released_mamba_state(depth: int = 2, classes: int = 5) -> dict[str, torch.Tensor]:
    """Released xT Mamba names (mamba-ssm ``Mamba`` defaults: expand 2, d_state 16, d_conv 4)."""
    state = {k: v for k, v in _released_like_state(depth=0, classes=classes).items()}
    d, inner, rank = 768, 1536, 48
    for i in range(depth):
        p = f"module.decoder.layers.{i}."
        state |= {
            p + "norm.weight": torch.rand(d),
            p + "norm.bias": torch.randn(d),
            p + "mixer.in_proj.weight": torch.randn(2 * inner, d) * 0.02,
            p + "mixer.conv1d.weight": torch.randn(inner, 1, 4) * 0.1,
            p + "mixer.conv1d.bias": torch.randn(inner) * 0.1,
            p + "mixer.x_proj.weight": torch.randn(rank + 32, inner) * 0.02,
            p + "mixer.dt_proj.weight": torch.randn(inner, rank) * 0.02,
            p + "mixer.dt_proj.bias": torch.randn(inner) * 0.1,
            p + "mixer.A_log": torch.log(torch.arange(1, 17).float()).repeat(inner, 1),
            p + "mixer.D": torch.ones(inner),
            p + "mixer.out_proj.weight": torch.randn(d, inner) * 0.02,
        }
    return state


def test_released_mamba_decoder_imports_with_its_own_layout() -> None:
    state = _released_mamba_state()
    model = convert_xt_state_dict(state, backbone="swinv2_tiny_window8_256")
    ctx = model.config.context_encoder
    assert (ctx.kind, ctx.depth, ctx.layout) == ("mamba", 2, "xt")
    ours = model.state_dict()
    for key, value in state.items():
        if ".decoder.layers." in key:
            new = key.replace("module.decoder.layers.", "context_encoder.layers.")
            torch.testing.assert_close(ours[new], value)
    # the xT layout reads even layers backwards: the last token reaches the first one
    tokens = torch.randn(1, 3, 768)
    changed = tokens.clone()
    changed[:, -1] = torch.randn(768)  # (a constant shift would vanish in the LayerNorm)
    positions = torch.zeros(3, 2, dtype=torch.long)
    with torch.inference_mode():
        a, _ = model.context_encoder(tokens, positions, None)
        b, _ = model.context_encoder(changed, positions, None)
    assert (a[:, 0] - b[:, 0]).abs().max() > 0


def test_import_records_xts_conventions_in_the_saved_config(tmp_path: Path) -> None:
    """xT's conventions (heads = dim // 128, LlamaRMSNorm eps 1e-5, GELU gate, MAE's column-
    first sin-cos, the stitched image-wide token order) are in the checkpoint's config, so a
    reloaded file computes the same; ``--num-heads`` overrides the head count."""
    src = tmp_path / "xt_inat.pth"
    torch.save({"state_dict": _released_like_state(depth=1, classes=7)}, src)
    out = tmp_path / "xt_inat.safetensors"
    assert main(["import-xt-checkpoint", str(src), str(out)]) == 0
    model = load_checkpoint(out)
    ctx = model.config.context_encoder
    assert (ctx.num_heads, ctx.norm_eps, ctx.mlp_activation) == (6, 1e-5, "gelu")
    assert (ctx.position_order, ctx.token_order, ctx.final_norm) == ("col_row", "image", False)
    assert model.whole_sequence and ctx.max_sequence_tokens >= 4096  # an iNat crop: 256
    assert model.context_encoder.layers[0].input_layernorm.eps == 1e-5
    assert main(["import-xt-checkpoint", str(src), str(out), "--num-heads", "12"]) == 0
    assert load_checkpoint(out).config.context_encoder.num_heads == 12
    with pytest.raises(CheckpointError, match="does not divide"):
        convert_xt_state_dict(_released_like_state(depth=1, classes=3), num_heads=5)
    mamba = convert_xt_state_dict(
        _released_mamba_state(depth=1), backbone="swinv2_tiny_window8_256"
    )
    mctx = mamba.config.context_encoder
    assert (mctx.layout, mctx.token_order, mctx.position_order) == ("xt", "image", "col_row")
    assert mamba.whole_sequence
