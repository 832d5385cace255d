"""Image sources from in-memory or lazy arrays (numpy, dask, zarr), e.g. a napari layer's data.

A dask level stays lazy: :meth:`ImageSource.read` slices it and ``np.asarray`` computes only the
chunks of the requested box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xt_engine.errors import InputError
from xt_engine.io.source import ImageSource


def guess_axes(shape: Sequence[int], rgb: bool | None = None) -> str:
    """Axes of a 2-D or 3-D array.

    ``yx`` for 2-D. For 3-D: ``yxc`` when ``rgb`` or the last axis is small (<= 4: gray+alpha,
    RGB, RGBA, 2-channel SAR); else ``cyx`` when the first axis is small (<= 16); else ``yxc``
    when only the last axis is (<= 16, e.g. (H, W, 5)).
    """
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3:
        if rgb or (rgb is None and shape[-1] <= 4):
            return "yxc"
        if shape[0] <= 16:
            return "cyx"
        if shape[-1] <= 16:
            return "yxc"
    raise InputError(
        f"cannot tell the axes of an array of shape {tuple(shape)}",
        "pass a 2-D image, or 3-D with channels first (C <= 16) or last (C <= 16), "
        "or give the axes explicitly (e.g. axes='cyx')",
    )


def source_from_arrays(
    levels: Any, axes: str | None = None, *, rgb: bool | None = None, name: str = "array"
) -> ImageSource:
    """Wrap one array or a list of pyramid levels (largest first) as an :class:`ImageSource`.

    Levels may be numpy, dask or zarr arrays (anything with ``shape``, ``dtype`` and slicing);
    all share ``axes`` (guessed from level 0 when not given).
    """
    level_list = list(levels) if isinstance(levels, list | tuple) else [levels]
    if not level_list:
        raise InputError("no image data given", "pass an array or a list of pyramid levels")
    for level in level_list:
        if not (
            hasattr(level, "shape") and hasattr(level, "dtype") and hasattr(level, "__getitem__")
        ):
            raise InputError(
                f"a pyramid level of type {type(level).__name__} is not an array",
                "pass numpy / dask / zarr arrays (convert nested lists with numpy.asarray)",
            )
    axes = axes or guess_axes(level_list[0].shape, rgb)
    return ImageSource(levels=level_list, axes=axes, name=name, metadata={"format": "array"})
