"""Synthetic SAR-like scenes whose vessel labels need context beyond one region.

A scene has speckled sea (dark), textured land (bright) and small bright vessels. Classes:

    0 background (sea), 1 land, 2 vessel near shore (within ``near_shore_px`` of land),
    3 vessel offshore.

``near_shore_px`` is several regions wide by default, so a single region often cannot tell the
two vessel classes apart: the land that decides it may lie outside the region.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

SAR_CLASS_NAMES = ("background", "land", "vessel_near_shore", "vessel_offshore")
SAR_CLASS_COLORS = ("#00000000", "#c8a064", "#ff3030", "#30c0ff")


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth random field in about [-1, 1] with features ``cell`` px wide (bicubic upsampling)."""
    coarse_shape = (max(2, shape[0] // cell + 2), max(2, shape[1] // cell + 2))
    coarse = torch.from_numpy(rng.standard_normal(coarse_shape).astype(np.float32))
    up = F.interpolate(coarse[None, None], scale_factor=cell, mode="bicubic", align_corners=False)
    return up[0, 0, : shape[0], : shape[1]].numpy()


def make_sar_scene(
    shape: tuple[int, int] = (4096, 4096),
    seed: int = 0,
    *,
    land_fraction: float = 0.25,
    num_vessels: int | None = None,
    near_shore_px: int = 600,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``(H, W)`` uint8 image and its ``(H, W)`` uint8 class mask (see module docstring)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    field = _smooth_field(rng, shape, cell=max(64, min(h, w) // 4))
    field += 0.3 * _smooth_field(rng, shape, cell=max(16, min(h, w) // 24))
    land = field > np.quantile(field, 1.0 - land_fraction)
    mask = land.astype(np.uint8)

    # distance to land, computed on a coarse grid (8 px) to stay cheap on large scenes
    step = 8
    coarse_land = land[::step, ::step]
    if coarse_land.any():
        dist = ndimage.distance_transform_edt(~coarse_land) * step
    else:
        dist = np.full(coarse_land.shape, np.inf)

    count = num_vessels if num_vessels is not None else max(4, h * w // 200_000)
    vessels: list[tuple[int, int, int, int]] = []
    for _ in range(count * 4):
        if len(vessels) >= count:
            break
        y, x = int(rng.integers(8, max(9, h - 8))), int(rng.integers(8, max(9, w - 8)))
        if land[y, x]:
            continue
        vh, vw = (int(v) for v in rng.integers(3, 9, size=2))
        y1, x1 = min(h, y + vh), min(w, x + vw)
        if land[y:y1, x:x1].any():
            continue
        near = (
            dist[min(y // step, dist.shape[0] - 1), min(x // step, dist.shape[1] - 1)]
            <= near_shore_px
        )
        mask[y:y1, x:x1] = 2 if near else 3
        vessels.append((y, x, y1, x1))

    # backscatter: sea dark, land bright and textured, vessels very bright; multiplicative speckle
    sigma0 = np.where(land, 0.45 + 0.15 * _smooth_field(rng, shape, cell=24), 0.08).astype(
        np.float32
    )
    for y, x, y1, x1 in vessels:
        sigma0[y:y1, x:x1] = 0.95
    speckle = rng.gamma(shape=4.0, scale=0.25, size=shape).astype(np.float32)
    image = np.clip(sigma0 * speckle * 255.0, 0, 255).astype(np.uint8)
    return image, mask
