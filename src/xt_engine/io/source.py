"""``ImageSource``: one image as a list of pyramid levels that can be read region by region.

Every level is an array-like (numpy, numpy memmap, dask, zarr, :class:`SqueezedArray`) with the
same axes string, made of ``y``, ``x`` and optionally ``c`` (channels), e.g. ``"yx"`` (H, W),
``"yxc"`` (H, W, C) or ``"cyx"`` (C, H, W). Level 0 is full resolution; later levels are smaller.

Reads return new ``(C, h, w)`` C-contiguous numpy arrays in the source dtype (``C == 1`` without
a channel axis).
Only the requested box of the requested level is sliced out of the level array, so a lazy level
(zarr, dask, memmap) loads at most the chunks that box touches. Errors raised while decoding the
underlying data (corrupt or truncated files) come out as :class:`InputError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xt_engine.errors import InputError, XTError

CORRUPT_FIX = (
    "check that the file is complete and not corrupted (copy, download or export it again)"
)


@dataclass(frozen=True)
class Georeference:
    """Where a scene's level-0 pixels lie on the Earth.

    Attributes:
        transform: the affine map from level-0 pixel (column, row) corners to CRS coordinates,
            in GDAL / rasterio order ``(a, b, c, d, e, f)``: ``x = a * col + b * row + c`` and
            ``y = d * col + e * row + f`` (pixel (0, 0)'s outer corner is ``(c, f)``).
        crs_wkt: the coordinate reference system as WKT (None when the file names only a code).
        crs_epsg: its EPSG code, when it has one.
        units: the CRS's linear unit ("metre", "degree", ...), None when unknown.
    """

    transform: tuple[float, float, float, float, float, float]
    crs_wkt: str | None = None
    crs_epsg: int | None = None
    units: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "transform": [float(v) for v in self.transform],
            "crs_wkt": self.crs_wkt,
            "crs_epsg": self.crs_epsg,
            "units": self.units,
        }


@dataclass
class ImageSource:
    """A (possibly multiscale) image.

    Attributes:
        levels: arrays, level 0 (full resolution) first, each with axes ``axes``; every level has
            the same channel count and is no larger than the one before it.
        axes: e.g. ``"yx"``, ``"yxc"`` or ``"cyx"``.
        pixel_size: (y, x) physical size of a level-0 pixel, or None when the file states none.
        unit: unit of ``pixel_size`` ("micrometer", "meter", ...); None without a pixel size or
            when the file states no unit.
        name: a short label (file name) for messages and provenance.
        metadata: reader details, free-form; readers set ``format`` (e.g. "tiff", "openslide",
            "dicom", "geotiff") and, where known, ``vendor``.
        nodata: the value marking pixels without data (a scene's nodata, a slide's padding), or
            None; NaN pixels of float images are always treated as without data.
        georeference: the scene's CRS and affine transform, None for an image that has none
            (then coordinates stay in pixels; units are never invented).
        channel_names: one name per channel (band descriptions), or None.
        associated: the slide's associated images (``label``, ``macro``, ``thumbnail``), each a
            function returning an RGB(A) ``(h, w, C)`` uint8 array, read only when called.
    """

    levels: list[Any]
    axes: str
    pixel_size: tuple[float, float] | None = None
    unit: str | None = None
    name: str = "array"
    metadata: dict[str, Any] = field(default_factory=dict)
    nodata: float | None = None
    georeference: Georeference | None = None
    channel_names: list[str] | None = None
    associated: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axes = self.axes.lower()
        if sorted(self.axes) not in (["x", "y"], ["c", "x", "y"]):
            raise InputError(
                f"image axes {self.axes!r} are not supported",
                "pass a 2-D image (yx) or one with a channel axis (cyx / yxc)",
            )
        if not self.levels:
            raise InputError(f"{self.name} has no image data", "pass at least one pyramid level")
        for level in self.levels:
            if not hasattr(level, "shape") or len(level.shape) != len(self.axes):
                raise InputError(
                    f"a pyramid level of {self.name} has shape {getattr(level, 'shape', None)} "
                    f"for axes {self.axes!r}",
                    "give every level the same axes, as numpy / dask / zarr arrays",
                )
        for i in range(1, len(self.levels)):
            (h0, w0), (h, w) = self.shape_yx(i - 1), self.shape_yx(i)
            if h > h0 or w > w0 or self._channels(i) != self._channels(0):
                raise InputError(
                    f"pyramid level {i} of {self.name} ({h} x {w}, {self._channels(i)} channels) "
                    f"does not follow level {i - 1} ({h0} x {w0}, {self._channels(0)} channels)",
                    "order levels from largest to smallest, all with the same channels",
                )
        if self.pixel_size is None:
            self.unit = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.levels[0].dtype)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def num_channels(self) -> int:
        return self._channels(0)

    def shape_yx(self, level: int = 0) -> tuple[int, int]:
        shape = self.levels[self._check_level(level)].shape
        return int(shape[self.axes.index("y")]), int(shape[self.axes.index("x")])

    def downsample(self, level: int) -> tuple[float, float]:
        """Level-0 pixels per pixel of ``level`` along (y, x)."""
        h0, w0 = self.shape_yx(0)
        h, w = self.shape_yx(level)
        return h0 / h, w0 / w

    def read(self, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Pixels of box ``[y0, y1) x [x0, x1)`` of ``level`` as (C, h, w), clipped to the image.

        The result is a new, writable, C-contiguous array, never a view of the level (so neither a
        caller's numpy image nor a read-only memory map can be changed through it).
        """
        array = self.levels[self._check_level(level)]
        h, w = self.shape_yx(level)
        y0, x0 = min(max(y0, 0), h), min(max(x0, 0), w)
        y1, x1 = max(min(y1, h), y0), max(min(x1, w), x0)
        index = tuple(
            {"y": slice(y0, y1), "x": slice(x0, x1)}.get(axis, slice(None)) for axis in self.axes
        )
        try:
            data = np.asarray(array[index])  # a dask slice computes only this box here
        except (XTError, MemoryError):
            raise
        except Exception as err:  # noqa: BLE001 - codecs, tifffile and zarr raise many types
            raise InputError(
                f"cannot read level {level}, box y {y0}:{y1} x {x0}:{x1} of {self.name} "
                f"({type(err).__name__}: {err})",
                CORRUPT_FIX,
            ) from err
        owned = data.base is None and data.flags.writeable  # not a view of the level itself
        data = np.transpose(data, [self.axes.index(a) for a in "cyx" if a in self.axes])
        if not (owned and data.flags.c_contiguous):
            data = np.array(data, order="C", copy=True)
        return data if "c" in self.axes else data[None]

    def read_padded(self, level: int, y0: int, x0: int, size: int) -> np.ndarray:
        """A ``(C, size, size)`` square at ``(y0, x0)``; the part outside the image is zeros."""
        valid = self.read(level, y0, x0, y0 + size, x0 + size)
        if valid.shape[1:] == (size, size):
            return valid
        out = np.zeros((valid.shape[0], size, size), dtype=valid.dtype)
        dy, dx = max(-y0, 0), max(-x0, 0)  # a box starting left of / above the image
        out[:, dy : dy + valid.shape[1], dx : dx + valid.shape[2]] = valid
        return out

    def _channels(self, level: int) -> int:
        return int(self.levels[level].shape[self.axes.index("c")]) if "c" in self.axes else 1

    def _check_level(self, level: int) -> int:
        if not 0 <= level < len(self.levels):
            raise InputError(
                f"pyramid level {level} does not exist in {self.name}",
                f"pick a level from 0 to {len(self.levels) - 1}",
            )
        return level


class SqueezedArray:
    """Lazy view of an array with some singleton axes fixed to index 0.

    ``index`` has one entry per axis of ``array``: ``slice(None)`` for a kept axis, an int for a
    dropped one. Indexing takes one slice per kept axis and slices the underlying array once.
    """

    def __init__(self, array: Any, index: tuple[slice | int, ...]) -> None:
        self.array, self.index = array, index
        self.shape = tuple(
            s for s, i in zip(array.shape, index, strict=True) if isinstance(i, slice)
        )
        self.dtype = array.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> Any:
        keys = iter(key)
        full = tuple(next(keys) if isinstance(i, slice) else i for i in self.index)
        return self.array[full]
