"""Resolve what a user names as "the model": a registered variant or a checkpoint file."""

from __future__ import annotations

from pathlib import Path

import torch

from xt_engine.checkpoint import load_checkpoint
from xt_engine.errors import ConfigError
from xt_engine.models import XTModel, create_model, list_models

ASSETS = Path(__file__).parent / "assets"


def bundled_checkpoint(name: str) -> Path | None:
    """The trained weights shipped inside the package for a registered variant, if any."""
    path = ASSETS / f"{name}.safetensors"
    return path if path.is_file() else None


def load_model(spec: str, *, seed: int = 0) -> XTModel:
    """``spec`` is a ``.safetensors`` checkpoint path or a registered name: its bundled trained
    weights when the package ships them, else a seeded random initialisation."""
    if spec.endswith(".safetensors") or Path(spec).is_file():
        return load_checkpoint(spec)
    bundled = bundled_checkpoint(spec)
    if bundled is not None:
        return load_checkpoint(bundled)
    if spec not in list_models():
        raise ConfigError(
            f"{spec!r} is neither a checkpoint file nor a registered model",
            f"pass a .safetensors checkpoint or one of: {', '.join(list_models())}",
        )
    torch.manual_seed(seed)
    return create_model(spec).eval()
