"""Resolve what a user names as "the model": a registered variant or a checkpoint file."""

from __future__ import annotations

from pathlib import Path

import torch

from xt_engine.checkpoint import load_checkpoint
from xt_engine.errors import ConfigError
from xt_engine.models import XTModel, create_model, list_models


def load_model(spec: str, *, seed: int = 0) -> XTModel:
    """``spec`` is a ``.safetensors`` checkpoint path or a registered name (random init, seeded)."""
    if spec.endswith(".safetensors") or Path(spec).is_file():
        return load_checkpoint(spec)
    if spec not in list_models():
        raise ConfigError(
            f"{spec!r} is neither a checkpoint file nor a registered model",
            f"pass a .safetensors checkpoint or one of: {', '.join(list_models())}",
        )
    torch.manual_seed(seed)
    return create_model(spec).eval()
