"""Checkpoints: a safetensors file whose metadata carries the model config as JSON.

A checkpoint alone rebuilds its model (``load_checkpoint(path)``). Pickle files are never
unpickled beyond ``weights_only=True`` (see :func:`xt_engine.models.region_encoder.read_state_dict`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from xt_engine.config import XTConfig
from xt_engine.errors import CheckpointError, ConfigError
from xt_engine.models import XTModel, create_model

FORMAT = "napari-xt/1"


def save_checkpoint(
    model: XTModel, path: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights and config to ``path`` (``.safetensors``), atomically."""
    path = Path(path)
    metadata = {
        "format": FORMAT,
        "xt_config": json.dumps(model.config.to_dict()),
        "extra": json.dumps(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".partial")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_checkpoint_config(path: str | os.PathLike[str]) -> tuple[XTConfig, dict[str, Any]]:
    """The config and the ``extra`` metadata stored in a checkpoint, without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist", "pick an existing .safetensors file"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a napari-xt checkpoint (not a safetensors file)",
            "pass a file written by `xt train` or save_checkpoint()",
        ) from err
    if metadata.get("format") != FORMAT or "xt_config" not in metadata:
        raise CheckpointError(
            f"{path} holds tensors but no napari-xt config",
            "for plain timm weights use region_encoder.weights; else re-save with save_checkpoint()",
        )
    try:
        config = XTConfig.from_dict(json.loads(metadata["xt_config"]))
    except (json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"config stored in {path} is invalid: {err}") from err
    return config, json.loads(metadata.get("extra", "{}"))


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> XTModel:
    """Rebuild the model stored in ``path`` and load its weights (strict)."""
    from safetensors.torch import load_file

    config, _ = read_checkpoint_config(path)
    config.region_encoder.weights = None  # weights come from the checkpoint itself
    model = create_model(config)
    state = load_file(str(path), device=str(device))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"weights in {path} do not match its config: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}",
            "re-export the checkpoint with save_checkpoint()",
        )
    return model.to(device).eval()
