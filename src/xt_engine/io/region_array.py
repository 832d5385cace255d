"""``RegionArray``: a lazy array-like level whose pixels come from a box-reading function.

The slide readers (:mod:`xt_engine.io.openslide_reader`, :mod:`xt_engine.io.dicom_reader`) read
pixels only through a library call that takes a box; this class turns numpy-style indexing
into one such call. ``shape`` is ``(H, W)`` or ``(H, W, C)``; an index is a tuple (or a single
entry) of slices, ints and at most one ``Ellipsis``, as numpy takes them. The box spanned by
the y and x entries is read once (a slice's step is then applied to the box read, so
``level[::4, ::4]`` reads the whole level), then the channel entry is applied. ``__array__``
reads the whole level (what ``np.asarray(level)`` does; meant for the small levels only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: reads box ``[y0, y0 + h) x [x0, x0 + w)`` of a level as an ``(h, w)`` or ``(h, w, C)`` array
BoxReader = Callable[[int, int, int, int], np.ndarray]


class RegionArray:
    """A lazy level of shape ``shape`` and dtype ``dtype`` read box by box through ``read_box``."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, read_box: BoxReader) -> None:
        if len(shape) not in (2, 3):
            raise ValueError(f"a RegionArray is (H, W) or (H, W, C), not {shape}")
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._read_box = read_box

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[:, :]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        ys, xs, rest = self._split(key)
        box: list[tuple[int, int, slice | int]] = []
        for entry, size in ((ys, self.shape[0]), (xs, self.shape[1])):
            if isinstance(entry, slice):
                start, stop, step = entry.indices(size)
                if step < 0:
                    raise IndexError("RegionArray does not take negative steps")
                box.append((start, max(stop, start), slice(None, None, step)))
            else:
                index = int(entry) + size if int(entry) < 0 else int(entry)
                if not 0 <= index < size:
                    raise IndexError(f"index {entry} is out of bounds for size {size}")
                box.append((index, index + 1, 0))
        (y0, y1, pick_y), (x0, x1, pick_x) = box
        h, w = y1 - y0, x1 - x0
        if h and w:
            data = np.asarray(self._read_box(y0, x0, h, w))
        else:
            data = np.zeros((h, w, *self.shape[2:]), self.dtype)
        if data.shape != (h, w, *self.shape[2:]) or data.dtype != self.dtype:
            raise ValueError(
                f"a box read returned {data.shape} {data.dtype}, "
                f"not {(h, w, *self.shape[2:])} {self.dtype}"
            )
        return data[(pick_y, pick_x, *rest)]

    def _split(self, key: Any) -> tuple[Any, Any, tuple[Any, ...]]:
        """(y entry, x entry, the channel entries) of a numpy-style index."""
        entries = list(key) if isinstance(key, tuple) else [key]
        if entries.count(Ellipsis) > 1:
            raise IndexError("an index can only have a single ellipsis")
        if Ellipsis in entries:
            at = entries.index(Ellipsis)
            fill = [slice(None)] * (self.ndim - len(entries) + 1)
            entries = entries[:at] + fill + entries[at + 1 :]
        if len(entries) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-d RegionArray")
        entries += [slice(None)] * (self.ndim - len(entries))
        for entry in entries:
            if not isinstance(entry, slice | int | np.integer):
                raise IndexError(f"RegionArray takes slices and ints, not {type(entry).__name__}")
        return entries[0], entries[1], tuple(entries[2:])
