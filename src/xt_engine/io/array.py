"""Image sources from in-memory or lazy arrays (numpy, dask, zarr), e.g. a napari layer's data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xt_engine.errors import InputError
from xt_engine.io.source import ImageSource


def guess_axes(shape: Sequence[int], rgb: bool | None = None) -> str:
    """Axes of a 2-D or 3-D array: ``yx``; ``yxc`` when the last axis is small (<= 4) or ``rgb``;
    else ``cyx`` when the first axis is small (<= 16)."""
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3:
        if rgb or (rgb is None and shape[-1] <= 4):
            return "yxc"
        if shape[0] <= 16:
            return "cyx"
    raise InputError(
        f"cannot tell the axes of an array of shape {tuple(shape)}",
        "pass a 2-D image, or 3-D with channels first (C <= 16) or last (C <= 4)",
    )


def source_from_arrays(
    levels: Any, axes: str | None = None, *, rgb: bool | None = None, name: str = "array"
) -> ImageSource:
    """Wrap one array or a list of pyramid levels (largest first) as an :class:`ImageSource`."""
    level_list = list(levels) if isinstance(levels, list | tuple) else [levels]
    if not level_list:
        raise InputError("no image data given", "pass an array or a list of pyramid levels")
    axes = axes or guess_axes(level_list[0].shape, rgb)
    return ImageSource(levels=level_list, axes=axes, name=name)
