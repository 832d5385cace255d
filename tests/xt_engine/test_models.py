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


@pytest.mark.parametrize("name", TINY)
def test_contract_shapes_and_streaming_state(name: str) -> None:
    model = create_model(name).eval()
    cfg = model.config
    r, c, k = cfg.tiling.region_size, cfg.region_encoder.in_chans, cfg.head.num_classes
    pixels = torch.rand(1, 3, c, r, r)
    rc = torch.tensor([[0, 0], [0, 1], [1, 0]])
    outputs, state = model(pixels, rc, model.init_state(1))
    assert outputs.logits.shape == (3, k, r, r)
    assert torch.isfinite(outputs.logits).all()
    # a second chunk runs with the returned state
    outputs2, _ = model(pixels[:, :1], torch.tensor([[1, 1]]), state)
    assert outputs2.logits.shape == (1, k, r, r)


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
    assert len(ours) == len(theirs)
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
