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
from xt_engine.context_config import V1_DEFAULTS
from xt_engine.errors import CheckpointError, ConfigError
from xt_engine.models import XTModel, create_model

FORMAT = "napari-xt/2"
V1 = "napari-xt/1"  # written before the context defaults moved (see :data:`V1_DEFAULTS`)


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
    if metadata.get("format") not in (FORMAT, V1) or "xt_config" not in metadata:
        raise CheckpointError(
            f"{path} holds tensors but no napari-xt config",
            "for plain timm weights use region_encoder.weights; else re-save with save_checkpoint()",
        )
    try:
        stored = json.loads(metadata["xt_config"])
        if metadata["format"] == V1:
            stored = with_v1_defaults(stored)
        config = XTConfig.from_dict(stored)
    except (json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"config stored in {path} is invalid: {err}") from err
    return config, json.loads(metadata.get("extra", "{}"))


def with_v1_defaults(stored: Any) -> Any:
    """A ``napari-xt/1`` config dict with the context fields it leaves out set to the defaults
    of that format (:data:`~xt_engine.context_config.V1_DEFAULTS`), not today's."""
    if not isinstance(stored, dict) or not isinstance(stored.get("context_encoder", {}), dict):
        return stored  # from_dict names the problem
    context = stored.get("context_encoder") or {}
    return stored | {"context_encoder": V1_DEFAULTS | context}


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> XTModel:
    """Rebuild the model stored in ``path`` and load its weights (strict).

    Nothing is allocated on a header's word: the config is first built on PyTorch's ``meta``
    device (no memory) and its tensor names and shapes are compared with the file's header, so
    a small file whose config names a huge model is refused before any weight exists; the
    loaded weights must all be finite."""
    from safetensors.torch import load_file

    config, _ = read_checkpoint_config(path)
    config.region_encoder.weights = None  # weights come from the checkpoint itself
    _check_shapes(path, config)
    model = create_model(config)
    state = load_file(str(path), device=str(device))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"weights in {path} do not match its config: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}",
            "re-export the checkpoint with save_checkpoint()",
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights (NaN or Inf) in {len(bad)} tensor(s), e.g. {bad[0]}",
            "use a checkpoint from a training run that did not diverge",
        )
    return model.to(device).eval()


def _check_shapes(path: str | os.PathLike[str], config: XTConfig) -> None:
    """CheckpointError unless the file's tensors have the names and shapes ``config`` builds
    (checked on the ``meta`` device: no memory is allocated for the model)."""
    skeleton = _meta_model(config)
    with safe_open(str(path), framework="pt") as handle:
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    for name, tensor in skeleton.state_dict().items():
        if name in shapes and shapes[name] != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: tensor {name} has shape {list(shapes[name])} but its config builds "
                f"{list(tensor.shape)}",
                "re-export the checkpoint with save_checkpoint() from the model it holds",
            )
    missing = [k for k in skeleton.state_dict() if k not in shapes]
    if missing:
        raise CheckpointError(
            f"{path} lacks {len(missing)} tensor(s) its config needs (e.g. {missing[0]})",
            "re-export the checkpoint with save_checkpoint() from the model it holds",
        )


def _meta_model(config: XTConfig) -> XTModel:
    """The model of ``config`` on the ``meta`` device. Some timm constructors read values
    from tensors they create (e.g. ConvNeXt's drop-path rates via ``tolist()``), which torch
    < 2.5 refuses on meta tensors (ViT: ``item()``); those reads then see zeros there (such
    values set rates, never shapes). Tested on torch 2.4 (scripts/check-minimum.sh)."""
    try:
        with torch.device("meta"):
            return create_model(config)
    except (RuntimeError, ConfigError) as err:  # the region encoder wraps timm's errors
        if "meta" not in str(err.__cause__ or err):
            raise
    tolist, item = torch.Tensor.tolist, torch.Tensor.item

    def meta_tolist(self: torch.Tensor) -> Any:
        return torch.zeros(self.shape, device="cpu").tolist() if self.is_meta else tolist(self)

    def meta_item(self: torch.Tensor) -> Any:
        return 0.0 if self.is_meta else item(self)

    torch.Tensor.tolist, torch.Tensor.item = meta_tolist, meta_item  # type: ignore[method-assign,assignment]
    try:
        with torch.device("meta"):
            return create_model(config)
    finally:
        torch.Tensor.tolist, torch.Tensor.item = tolist, item  # type: ignore[method-assign]
