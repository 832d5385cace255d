"""A virtual pyramid level: an existing level resized to a pixel size the file does not have.

:func:`with_resampled_level` returns a new :class:`ImageSource` whose levels are the
original ones with one :class:`ResampledLevel` inserted where its size belongs (levels stay
ordered largest first), so every consumer (region reads, foreground, the store's NGFF scale
``pixel_size x downsample(level)``) works unchanged. Its reads are computed from the ``base``
level on the box only: a read of ``h x w`` output pixels decodes about ``(h + 2) s x (w + 2) s``
base pixels (``s`` = the resize factor), never the whole level.

The resize is separable, antialiased linear interpolation, defined as Pillow's
``Image.resize(..., BILINEAR)``: output pixel ``i`` is centred on base coordinate
``(i + 0.5) * s``, weighted by a triangle of half-width ``max(s, 1)`` base pixels (an area-like
average when shrinking, plain bilinear when enlarging), weights renormalised at the image edge.
The weights of a pixel depend on its global index alone, so a box read equals the same box of
the whole level resized at once (tested against Pillow). Pixels without data (NaN / infinite
in any channel, or ``nodata`` in every channel) get no weight; an output pixel with no data
under it is NaN (float) or ``nodata``. Integer levels are rounded and clipped to their dtype.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from xt_engine.io.source import ImageSource


def with_resampled_level(
    source: ImageSource, base: int, shape_yx: tuple[int, int]
) -> tuple[ImageSource, int]:
    """``source`` with level ``base`` resized to ``shape_yx`` added as a level, and its index.

    ``source.metadata`` of the result adds ``resampled_levels`` (the virtual level's index)
    and ``resampled_from`` (``base``); the original source is not changed. A level larger
    than level 0 becomes the new level 0 (pixel size and georeference transform scaled).
    """
    levels = list(source.levels)
    virtual = ResampledLevel(levels[base], source.axes, shape_yx, source.nodata)
    index = next(
        (i for i in range(len(levels)) if _area(source.shape_yx(i)) < _area(shape_yx)),
        len(levels),
    )
    levels.insert(index, virtual)
    metadata = dict(source.metadata) | {"resampled_levels": [index], "resampled_from": base}
    changes: dict[str, Any] = {"levels": levels, "metadata": metadata}
    if index == 0:  # finer than level 0: the new level 0 has smaller pixels
        (h0, w0), (h, w) = source.shape_yx(0), shape_yx
        sy, sx = h0 / h, w0 / w
        if source.pixel_size is not None:
            changes["pixel_size"] = (source.pixel_size[0] * sy, source.pixel_size[1] * sx)
        if source.georeference is not None:
            a, b, c, d, e, f = source.georeference.transform
            changes["georeference"] = dataclasses.replace(
                source.georeference, transform=(a * sx, b * sy, c, d * sx, e * sy, f)
            )
    return dataclasses.replace(source, **changes), index


class ResampledLevel:
    """Array-like ``array`` (axes ``axes``) resized to ``shape_yx`` on every box read."""

    def __init__(
        self, array: Any, axes: str, shape_yx: tuple[int, int], nodata: float | None = None
    ) -> None:
        self.array, self.axes, self.nodata = array, axes, nodata
        self.dtype = np.dtype(array.dtype)
        self.in_yx = (int(array.shape[axes.index("y")]), int(array.shape[axes.index("x")]))
        self.out_yx = (int(shape_yx[0]), int(shape_yx[1]))
        sizes = {"y": self.out_yx[0], "x": self.out_yx[1]}
        self.shape = tuple(sizes.get(a, int(array.shape[i])) for i, a in enumerate(axes))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        """The box ``key`` (one slice per axis, step 1) of the resized level, in ``axes``."""
        boxes = {a: k.indices(n)[:2] for a, k, n in zip(self.axes, key, self.shape, strict=True)}
        wy, y0, y1 = _weights(self.in_yx[0], self.out_yx[0], *boxes["y"])
        wx, x0, x1 = _weights(self.in_yx[1], self.out_yx[1], *boxes["x"])
        index = tuple(
            {"y": slice(y0, y1), "x": slice(x0, x1)}.get(a, slice(None)) for a in self.axes
        )
        order = [self.axes.index(a) for a in "cyx" if a in self.axes]
        raw = np.transpose(np.asarray(self.array[index]), order)
        pixels = raw.astype(np.float64).reshape(-1, y1 - y0, x1 - x0)  # (C, h_in, w_in)
        valid = np.isfinite(pixels).all(axis=0)
        if self.nodata is not None:
            valid &= ~(pixels == self.nodata).all(axis=0)
        if valid.all():
            out = np.einsum("oi,cij,pj->cop", wy, pixels, wx, optimize=True)
        else:
            total = wy @ valid.astype(np.float64) @ wx.T
            data = np.where(valid, pixels, 0.0)
            out = np.einsum("oi,cij,pj->cop", wy, data, wx, optimize=True)
            empty = total <= 1e-12
            out = out / np.where(empty, 1.0, total)
            fill = np.nan if self.nodata is None else self.nodata
            out[:, empty] = fill
        result = self._cast(out)
        if "c" not in self.axes:
            result = result[0]
        else:
            result = result[(key[self.axes.index("c")], slice(None), slice(None))]
        back = np.argsort(order)  # (c, y, x) -> the level's axes
        return np.ascontiguousarray(np.transpose(result, back) if result.ndim > 2 else result)

    def _cast(self, out: np.ndarray) -> np.ndarray:
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            out = np.nan_to_num(out, nan=float(self.nodata or 0))
            return np.clip(np.rint(out), info.min, info.max).astype(self.dtype)
        return out.astype(self.dtype)


def _weights(in_size: int, out_size: int, o0: int, o1: int) -> tuple[np.ndarray, int, int]:
    """(o1 - o0, i1 - i0) weights of output pixels [o0, o1) over input pixels [i0, i1)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # the triangle's half-width, in input pixels
    centers = (np.arange(o0, o1, dtype=np.float64) + 0.5) * scale
    i0 = max(int(math.floor(centers[0] - support + 0.5)), 0) if o1 > o0 else 0
    i1 = min(int(centers[-1] + support + 0.5), in_size) if o1 > o0 else 0
    i1 = max(i1, i0 + 1) if o1 > o0 else i0
    inputs = np.arange(i0, i1, dtype=np.float64)
    weights = np.clip(1.0 - np.abs((inputs[None] - centers[:, None] + 0.5) / filterscale), 0, None)
    sums = weights.sum(axis=1, keepdims=True)
    return weights / np.where(sums > 0, sums, 1.0), i0, i1


def _area(shape: tuple[int, int]) -> int:
    return shape[0] * shape[1]
