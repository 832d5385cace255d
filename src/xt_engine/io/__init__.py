"""Image readers behind one function, :func:`open_image`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xt_engine.errors import InputError
from xt_engine.io.array import guess_axes, source_from_arrays
from xt_engine.io.source import ImageSource

TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff", ".btf")


def open_image(image: Any, axes: str | None = None) -> ImageSource:
    """Open a path (TIFF family, zarr / OME-Zarr), an array, a list of levels or an ImageSource."""
    if isinstance(image, ImageSource):
        return image
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.exists():
            raise InputError(f"image {path} does not exist", "check the path")
        lower = path.name.lower()
        if path.is_dir() or lower.endswith(".zarr"):
            from xt_engine.io.zarr_reader import open_zarr

            return open_zarr(path)
        if lower.endswith(TIFF_SUFFIXES):
            from xt_engine.io.tiff import open_tiff

            return open_tiff(path)
        raise InputError(
            f"{path.name}: unknown image format",
            "use a TIFF/OME-TIFF/SVS file or an OME-Zarr store",
        )
    if hasattr(image, "shape") or isinstance(image, list | tuple):
        return source_from_arrays(image, axes)
    raise InputError(f"cannot open an image from {type(image).__name__}", "pass a path or an array")


__all__ = ["ImageSource", "guess_axes", "open_image", "source_from_arrays"]
