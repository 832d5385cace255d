from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from xt_engine import (
    CheckpointError,
    XTConfig,
    create_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
)
from xt_engine.models.registry import model_config

TINY = list_models("test_")


def test_registry_lists_tiny_and_real_variants() -> None:
    names = list_models()
    assert {"xt_demo_sar", "xt_convnext_atto_txl", "xt_swinv2_tiny_txl"} <= set(names)
    assert len(TINY) >= 3


def _run_chunks(model, pixels, rc, sizes):
    state = model.init_state(1)
    outputs = []
    with torch.inference_mode():
        start = 0
        for size in sizes:
            out, state = model(pixels[:, start : start + size], rc[start : start + size], state)
            outputs.append(out)
            start += size
    return outputs, state


@pytest.mark.parametrize("name", TINY)
def test_contract_shapes_per_task(name: str) -> None:
    model = create_model(name).eval()
    cfg = model.config
    r, c, k = cfg.tiling.region_size, cfg.region_encoder.in_chans, cfg.head.num_classes
    pixels = torch.rand(1, 4, c, r, r)
    rc = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    (out,), state = _run_chunks(model, pixels, rc, [4])
    gh, gw = model.token_grid
    assert out.tokens.shape == (1, 4 * gh * gw, cfg.context_encoder.dim)
    if cfg.head.task == "segmentation":
        assert out.logits.shape == (4, k, r, r) and torch.isfinite(out.logits).all()
    elif cfg.head.task == "detection":
        s = model.output_stride
        assert out.heatmap.shape == (4, k, r // s, r // s)
        assert out.log_size.shape == (4, 2, r // s, r // s)
    else:
        assert model.finish(state).shape == (1, k)


CAUSAL_TINY = [n for n in TINY if not model_config(n).context_encoder.bidirectional]


@pytest.mark.parametrize("name", CAUSAL_TINY)
def test_contract_chunks_with_state_equal_one_chunk(name: str) -> None:
    model = create_model(name).eval()
    cfg = model.config
    r, c = cfg.tiling.region_size, cfg.region_encoder.in_chans
    pixels = torch.rand(1, 5, c, r, r)
    rc = torch.tensor([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]])
    (whole,), whole_state = _run_chunks(model, pixels, rc, [5])
    parts, state = _run_chunks(model, pixels, rc, [2, 1, 2])
    torch.testing.assert_close(
        torch.cat([p.tokens for p in parts], dim=1), whole.tokens, atol=1e-5, rtol=1e-5
    )
    if cfg.head.task == "classification":
        torch.testing.assert_close(
            model.finish(state), model.finish(whole_state), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("name", TINY)
def test_contract_gradients_reach_every_trainable_part(name: str) -> None:
    model = create_model(name).train()
    cfg = model.config
    r, c = cfg.tiling.region_size, cfg.region_encoder.in_chans
    out, state = model(
        torch.rand(1, 2, c, r, r), torch.tensor([[0, 0], [0, 1]]), model.init_state()
    )
    if cfg.head.task == "classification":
        loss = model.finish(state).square().mean()
    else:
        loss = sum(
            v.square().mean() for v in (out.logits, out.heatmap, out.log_size) if v is not None
        )
    loss.backward()
    for part in ("region_encoder", "input_proj", "context_encoder", "head"):
        grads = [
            p.grad for n, p in model.named_parameters() if n.startswith(part) and p.requires_grad
        ]
        if part == "context_encoder" and cfg.context_encoder.kind == "none":
            continue
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), part


@pytest.mark.parametrize("name", TINY)
def test_checkpoint_round_trip_rebuilds_the_same_model(name: str, tmp_path: Path) -> None:
    model = create_model(name).eval()
    path = save_checkpoint(model, tmp_path / f"{name}.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    r, c = model.config.tiling.region_size, model.config.region_encoder.in_chans
    pixels, rc = torch.rand(1, 2, c, r, r), torch.tensor([[0, 0], [0, 1]])
    with torch.inference_mode():
        expected, _ = model(pixels, rc, model.init_state(1))
        got, _ = loaded(pixels, rc, loaded.init_state(1))
    torch.testing.assert_close(got.logits, expected.logits)


def test_backbone_weights_from_a_timm_state_dict_file(tmp_path: Path) -> None:
    reference = timm.create_model("test_convnext", pretrained=False, in_chans=3).eval()
    weights = tmp_path / "test_convnext.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    cfg = model_config("test_convnext_none").to_dict()
    cfg["region_encoder"]["weights"] = str(weights)
    model = create_model(cfg).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        ours = model.region_encoder(x)
        theirs = reference.forward_intermediates(x, intermediates_only=True)
    theirs = theirs[-len(ours) :]  # the stages (timm < 1.0.16 also returns the stem first)
    assert len(ours) == 4
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_backbone_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    other = timm.create_model("test_vit", pretrained=False)
    weights = tmp_path / "vit.pth"
    torch.save(other.state_dict(), weights)
    cfg = model_config("test_convnext_none").to_dict()
    cfg["region_encoder"]["weights"] = str(weights)
    with pytest.raises(CheckpointError, match="do not fit backbone"):
        create_model(cfg)


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a napari-xt checkpoint"):
        load_checkpoint(text)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="no napari-xt config"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_config_dataclass_is_what_the_checkpoint_stores(tmp_path: Path) -> None:
    model = create_model("test_convnext_txl")
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    from xt_engine import read_checkpoint_config

    config, _ = read_checkpoint_config(path)
    assert isinstance(config, XTConfig) and config == model.config


def test_architecture_plus_two_weight_files_rebuilds_the_model(
    tmp_path: Path, split_weights
) -> None:
    from xt_engine.weights.loading import load_model_parts

    torch.manual_seed(5)
    source = create_model("test_convnext_txl").eval()
    backbone, rest = split_weights(source)
    model = load_model_parts("test_convnext_txl", str(backbone), str(rest))
    pixels, rc = torch.rand(1, 2, 3, 64, 64), torch.tensor([[0, 0], [0, 1]])
    with torch.inference_mode():
        expected, _ = source(pixels, rc, source.init_state())
        got, _ = model(pixels, rc, model.init_state())
    torch.testing.assert_close(got.logits, expected.logits)
    head_only = tmp_path / "head_only.pth"  # no input_proj: the fix is named
    torch.save({k: v for k, v in source.state_dict().items() if k.startswith("head.")}, head_only)
    with pytest.raises(CheckpointError, match="does not fit test_convnext_none"):
        load_model_parts("test_convnext_none", None, str(head_only))


def test_a_checkpoint_is_checked_before_a_model_is_built(tmp_path) -> None:
    """A tiny file whose config names a huge model is refused from its header (no allocation);
    shape mismatches and non-finite weights are refused with the fix."""
    import json
    import resource

    from safetensors.torch import save_file

    from xt_engine import CheckpointError, create_model, load_checkpoint, save_checkpoint
    from xt_engine.weights.checkpoint import FORMAT

    huge = model_config("test_convnext_txl").to_dict()
    huge["context_encoder"].update(dim=16384, depth=64, num_heads=128)  # ~200 GB of weights
    path = tmp_path / "huge.safetensors"
    meta = {"format": FORMAT, "xt_config": json.dumps(huge), "extra": "{}"}
    save_file({"input_proj.weight": torch.zeros(2, 2)}, str(path), metadata=meta)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="has shape|lacks"):
        load_checkpoint(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB
    model = create_model("test_convnext_txl")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    bad = save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(bad)
