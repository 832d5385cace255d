"""What decides a run's result besides the image, level, ROI and model config: recorded in the
result store's provenance (``xt.determinants``) and checked field by field on ``--resume``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xt_engine.io import ImageSource
from xt_engine.models import XTModel
from xt_engine.tiling import RegionGrid


def run_determinants(model: XTModel, scale: float) -> dict[str, object]:
    """What decides a run's result besides the image, level, ROI and model config, recorded in
    the store's provenance (``xt.determinants``) and checked on ``--resume``: the context
    chunking (``chunk_regions``, or ``whole`` for whole-sequence models), the input scale
    factor, the pad value, and the SHA-256 of the weights (batch size and device are not
    among them: they do not change the result)."""
    cfg = model.config
    whole = getattr(model, "whole_sequence", False)
    return {
        "context_chunk_regions": "whole" if whole else cfg.context_encoder.chunk_regions,
        "input_scale": scale,
        "pad_value": cfg.tiling.pad_value,
        "weights_sha256": weights_sha256(model),
    }


def input_fingerprint(source: ImageSource, level: int, grid: RegionGrid) -> dict[str, object]:
    """Size and modification time of the input file (when it is one) and a SHA-256 of the
    raw pixels of the run's first regions (at most 4), so a resume notices a changed input."""
    info: dict[str, object] = {}
    path = source.metadata.get("path")
    if path and Path(str(path)).is_file():
        stat = Path(str(path)).stat()
        info |= {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest = hashlib.sha256()
    for index in range(min(4, len(grid))):
        r = grid.region(index)
        pixels = np.ascontiguousarray(source.read_padded(level, r.read_y0, r.read_x0, r.size))
        digest.update(pixels.data)  # the array's bytes (numpy's stubs lack Buffer before 3.12)
    info["pixels_sha256"] = digest.hexdigest()
    return info


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes) in name order."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        _hash_value(digest, name, value)
    return digest.hexdigest()


def _hash_value(digest: Any, name: str, value: object) -> None:
    """A state-dict entry into ``digest``: tensors in any memory format (channels-last
    included) and quantized tensors (their integer values, scales and zero points); tuples of
    them (packed quantized parameters) item by item; anything else by its repr."""
    if isinstance(value, tuple | list):
        for i, item in enumerate(value):
            _hash_value(digest, f"{name}.{i}", item)
        return
    if not isinstance(value, torch.Tensor):
        digest.update(f"{name}:{value!r}".encode())
        return
    tensor = value.detach().cpu()
    if tensor.is_quantized:
        scales = tensor.q_per_channel_scales() if tensor.qscheme() in (
            torch.per_channel_affine, torch.per_channel_symmetric
        ) else torch.tensor([tensor.q_scale()])
        _hash_value(digest, f"{name}.scale", scales)
        tensor = tensor.int_repr()
    tensor = tensor.clone(memory_format=torch.contiguous_format).reshape(-1)
    digest.update(f"{name}:{tensor.dtype}:{tuple(value.shape)}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
