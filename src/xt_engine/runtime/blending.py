"""Blending overlapping regions' class probabilities so no seams show at tile borders.

With ``overlap = m`` each region reads ``m`` px beyond its output tile on every side (see
:mod:`xt_engine.tiling`), so its window also predicts the first ``m`` px of the tiles to its
right and below. :class:`SeamBlender` keeps those margins and, when the next regions arrive in
raster order, blends them into the start of their tiles: over a band of ``b = m`` px along the
top and the left edge the weight moves linearly from the earlier neighbour (at the border) to the
region itself (``b`` px in)::

    w_self(u, v) = r(u) r(v),  r(t) = (t + 0.5) / b for t < b, else 1
    top neighbour (1 - r(u)) r(v), left neighbour r(u) (1 - r(v)), top-left (1 - r(u)) (1 - r(v))

The four weights sum to 1, and at a border the new tile's first pixels carry the neighbour's
weights the neighbour's own tile ends with, so the blended probabilities are continuous across
tile borders. Only earlier regions are needed, so a tile is final as soon as its region is
decoded (live display and the store stay one write per tile). Held: the right margin of the last
region (``K x T x b``) and the bottom margins of one row of regions (``K x b x (T + b)`` each,
float16): memory grows with the image's width times the overlap (about 9 MiB for a 32k-wide
image, 4 classes, 32 px overlap), never with its area. Where a neighbour's margin is missing (a
resumed run: it was decoded before the interruption) the weights are renormalised over the
neighbours present, which leaves that border unblended.
"""

from __future__ import annotations

import numpy as np

from xt_engine.tiling import Region, RegionGrid


class SeamBlender:
    def __init__(self, grid: RegionGrid) -> None:
        self.grid = grid
        self.band = grid.overlap
        self._right: dict[tuple[int, int], np.ndarray] = {}  # (K, h, b) right of a tile
        self._bottom: dict[tuple[int, int], np.ndarray] = {}  # (K, b, w + b) below a tile

    def _ramp(self, length: int, blended: bool) -> np.ndarray:
        """r(t) for ``t < length`` (1 everywhere when that edge has no neighbour to blend)."""
        ramp = np.ones(length, np.float32)
        if blended:
            b = min(self.band, length)
            ramp[:b] = (np.arange(b, dtype=np.float32) + 0.5) / self.band
        return ramp

    def blend(self, region: Region, window: np.ndarray) -> np.ndarray:
        """``window`` (K, R, R) class probabilities of the region's whole input window ->
        (K, h, w) blended probabilities of its output tile (float32). Call in raster order."""
        m, b, h, w = region.margin, self.band, region.height, region.width
        row, col = region.row, region.col
        tile = window[:, m : m + h, m : m + w].astype(np.float32)
        top = self._bottom.get((row - 1, col))
        left = self._right.get((row, col - 1))
        corner = self._bottom.get((row - 1, col - 1))
        ry, rx = self._ramp(h, top is not None), self._ramp(w, left is not None)
        weight = ry[:, None] * rx[None, :]
        out = tile * weight
        total = weight.copy()
        by, bx = min(b, h), min(b, w)
        if top is not None:
            part = (1 - ry[:by, None]) * rx[None, :]
            out[:, :by] += top[:, :by, :w].astype(np.float32) * part
            total[:by] += part
        if left is not None:
            part = ry[:, None] * (1 - rx[None, :bx])
            out[:, :, :bx] += left[:, :h, :bx].astype(np.float32) * part
            total[:, :bx] += part
        if corner is not None and top is not None and left is not None:
            overhang = corner.shape[2] - b  # the corner region's tile width
            part = (1 - ry[:by, None]) * (1 - rx[None, :bx])
            out[:, :by, :bx] += corner[:, :by, overhang : overhang + bx].astype(np.float32) * part
            total[:by, :bx] += part
        out /= total  # 1 wherever every neighbour was present
        self._keep_margins(region, window)
        return out

    def _keep_margins(self, region: Region, window: np.ndarray) -> None:
        m, b, h, w = region.margin, self.band, region.height, region.width
        row, col = region.row, region.col
        self._right.pop((row, col - 1), None)
        self._bottom.pop((row - 1, col - 1), None)
        if col == self.grid.cols - 1:
            self._bottom.pop((row - 1, col), None)
        if col + 1 < self.grid.cols:
            self._right[(row, col)] = window[:, m : m + h, m + w : m + w + b].astype(np.float16)
        if row + 1 < self.grid.rows:
            below = window[:, m + h : m + h + b, m : m + w + b]
            self._bottom[(row, col)] = below.astype(np.float16)
