"""``ImageSource``: one image as a list of pyramid levels that can be read region by region.

Every level is an array-like (numpy, dask, zarr) with the same axes string, made of ``y``, ``x``
and optionally ``c`` (channels). Reads return ``(C, h, w)`` numpy arrays in the source dtype;
nothing larger than the requested box is ever loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xt_engine.errors import InputError


@dataclass
class ImageSource:
    """A (possibly multiscale) image.

    Attributes:
        levels: arrays, level 0 (full resolution) first, each with axes ``axes``.
        axes: e.g. ``"yx"``, ``"yxc"`` or ``"cyx"``.
        pixel_size: (y, x) physical size of a level-0 pixel, or None when the file states none.
        unit: unit of ``pixel_size`` ("micrometer", "meter", ...).
        name: a short label (file name) for messages and provenance.
    """

    levels: list[Any]
    axes: str
    pixel_size: tuple[float, float] | None = None
    unit: str | None = None
    name: str = "array"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if sorted(self.axes) not in (["x", "y"], ["c", "x", "y"]):
            raise InputError(
                f"image axes {self.axes!r} are not supported",
                "pass a 2-D image (yx) or one with a channel axis (cyx / yxc)",
            )
        for level in self.levels:
            if len(level.shape) != len(self.axes):
                raise InputError(
                    f"a pyramid level of {self.name} has shape {level.shape} for axes {self.axes!r}",
                    "give every level the same axes",
                )

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.levels[0].dtype)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def num_channels(self) -> int:
        return int(self.levels[0].shape[self.axes.index("c")]) if "c" in self.axes else 1

    def shape_yx(self, level: int = 0) -> tuple[int, int]:
        shape = self.levels[self._check_level(level)].shape
        return int(shape[self.axes.index("y")]), int(shape[self.axes.index("x")])

    def downsample(self, level: int) -> tuple[float, float]:
        """Level-0 pixels per pixel of ``level`` along (y, x)."""
        h0, w0 = self.shape_yx(0)
        h, w = self.shape_yx(level)
        return h0 / h, w0 / w

    def read(self, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Pixels of box ``[y0, y1) x [x0, x1)`` of ``level`` as (C, h, w), clipped to the image."""
        array = self.levels[self._check_level(level)]
        h, w = self.shape_yx(level)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        index: list[slice] = []
        for axis in self.axes:
            index.append({"y": slice(y0, y1), "x": slice(x0, x1)}.get(axis, slice(None)))
        data = np.asarray(array[tuple(index)])
        if hasattr(data, "compute"):  # pragma: no cover - defensive: dask via __array__
            data = data.compute()
        order = [self.axes.index(a) for a in "cyx" if a in self.axes]
        data = np.transpose(data, order)
        return data if "c" in self.axes else data[None]

    def read_padded(self, level: int, y0: int, x0: int, size: int) -> np.ndarray:
        """A ``(C, size, size)`` square at ``(y0, x0)``; the part outside the image is zeros."""
        valid = self.read(level, y0, x0, y0 + size, x0 + size)
        if valid.shape[1:] == (size, size):
            return valid
        out = np.zeros((valid.shape[0], size, size), dtype=valid.dtype)
        out[:, : valid.shape[1], : valid.shape[2]] = valid
        return out

    def _check_level(self, level: int) -> int:
        if not 0 <= level < len(self.levels):
            raise InputError(
                f"pyramid level {level} does not exist in {self.name}",
                f"pick a level from 0 to {len(self.levels) - 1}",
            )
        return level


class SqueezedArray:
    """Lazy view of a zarr array with singleton axes fixed to index 0."""

    def __init__(self, array: Any, index: tuple[slice | int, ...]) -> None:
        self.array, self.index = array, index
        self.shape = tuple(
            s for s, i in zip(array.shape, index, strict=True) if isinstance(i, slice)
        )
        self.dtype = array.dtype

    def __getitem__(self, key: tuple[slice, ...]) -> Any:
        keys = iter(key)
        full = tuple(next(keys) if isinstance(i, slice) else i for i in self.index)
        return self.array[full]
