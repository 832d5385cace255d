"""Shared fixtures: tiny synthetic images and a directory for artifacts (screenshots)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ARTIFACTS = Path(os.environ.get("XT_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def rgb_image() -> np.ndarray:
    """(150, 200, 3) uint8: not a multiple of the tiny models' 64 px regions on either side."""
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8)


@pytest.fixture
def split_weights(tmp_path: Path):
    """Write a model's weights as two files, the way users bring them: the region encoder as a
    plain timm state dict (``backbone.safetensors``) and everything else (``rest.pth``)."""
    from safetensors.torch import save_file

    def write(model: torch.nn.Module) -> tuple[Path, Path]:
        state = model.state_dict()
        backbone, rest = tmp_path / "backbone.safetensors", tmp_path / "rest.pth"
        prefix = "region_encoder.backbone."
        save_file(
            {
                k.removeprefix(prefix): v.contiguous()
                for k, v in state.items()
                if k.startswith(prefix)
            },
            str(backbone),
        )
        torch.save({k: v for k, v in state.items() if not k.startswith("region_encoder.")}, rest)
        return backbone, rest

    return write
