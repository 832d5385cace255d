"""A small PNG overview of an image with its segmentation overlaid, read in bands (bounded memory)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xt_engine.io.source import ImageSource


def _to_display(pixels: np.ndarray) -> np.ndarray:
    """(C, h, w) any dtype -> (h, w, 3) uint8 with a 1-99 percentile stretch."""
    rgb = pixels[:3] if pixels.shape[0] >= 3 else np.repeat(pixels[:1], 3, axis=0)
    rgb = rgb.astype(np.float32)
    lo, hi = np.percentile(rgb, 1), np.percentile(rgb, 99.5)
    rgb = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
    return (rgb.transpose(1, 2, 0) * 255).astype(np.uint8)


def write_overview(
    source: ImageSource,
    labels: Any,
    colors: Sequence[Sequence[int]],
    path: Path,
    *,
    level: int = 0,
    max_side: int = 1024,
    alpha: float = 0.55,
) -> Path:
    """Write ``path`` (PNG): the image at ``level`` downsampled to ``max_side`` with ``labels``
    (an array covering the same level, e.g. a zarr pyramid level 0) blended in ``colors``."""
    h, w = source.shape_yx(level)
    stride = max(1, math.ceil(max(h, w) / max_side))
    band = stride * 256
    image_rows, label_rows = [], []
    for y in range(0, h, band):
        pixels = source.read(level, y, 0, min(h, y + band), w)[:, ::stride, ::stride]
        image_rows.append(pixels)
        label_rows.append(_downsample_labels(labels, y, min(h, y + band), w, stride))
    rgb = _to_display(np.concatenate(image_rows, axis=1)).astype(np.float32)
    lab = np.concatenate(label_rows, axis=0)
    palette = np.array(colors, dtype=np.float32)
    overlay = palette[np.clip(lab, 0, len(palette) - 1)]
    a = alpha * overlay[..., 3:4] / 255.0
    blended = rgb * (1 - a) + overlay[..., :3] * a
    Image.fromarray(blended.astype(np.uint8)).save(path)
    return path


def _downsample_labels(labels: Any, y0: int, y1: int, width: int, stride: int) -> np.ndarray:
    """Rows ``y0:y1`` of ``labels`` at 1/``stride``: the highest class of each stride x stride
    block (so small objects of the later, rarer classes stay visible) while the band fits in
    64 M pixels; plain striding beyond that."""
    if stride == 1 or (y1 - y0) * width > 64_000_000:
        return np.asarray(labels[y0:y1:stride, ::stride])
    block = np.asarray(labels[y0:y1, :width])
    h, w = -(-block.shape[0] // stride) * stride, -(-block.shape[1] // stride) * stride
    padded = np.zeros((h, w), dtype=block.dtype)
    padded[: block.shape[0], : block.shape[1]] = block
    return padded.reshape(h // stride, stride, w // stride, stride).max(axis=(1, 3))
