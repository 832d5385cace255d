"""napari reader for TIFF / OME-TIFF / SVS / OME-Zarr: lazy multiscale layers (no Qt).

Levels stay zarr arrays (or lazy views of them), so level 0 of a whole slide is never loaded;
the pixel size becomes the layer scale; channels become RGB or one layer per channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xt_engine.errors import XTError
from xt_engine.io import TIFF_SUFFIXES, open_image

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Any:
    """The reader function when ``path`` is an image this plugin opens, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    name = str(path).lower().rstrip("/")
    if name.endswith(TIFF_SUFFIXES) or name.endswith(".zarr"):
        return read_image
    return None


def read_image(path: str | list[str]) -> list[LayerData]:
    """One lazy image layer (or one per channel) for ``path``."""
    path = path[0] if isinstance(path, list) else path
    try:
        source = open_image(path)
    except XTError as err:
        raise ValueError(str(err)) from err  # napari shows reader errors to the user
    levels = [_lazy(level) for level in source.levels]
    kwargs: dict[str, Any] = {"name": Path(str(path).rstrip("/")).name}
    if len(levels) > 1:
        kwargs["multiscale"] = True
    if source.pixel_size is not None:
        kwargs["scale"] = tuple(source.pixel_size)
        kwargs["units"] = source.unit or "pixel"
    if "c" in source.axes:
        channel_axis = source.axes.index("c")
        if source.axes == "yxc" and source.num_channels in (3, 4):
            kwargs["rgb"] = True
        else:
            kwargs["channel_axis"] = channel_axis
    data = levels if len(levels) > 1 else levels[0]
    return [(data, kwargs, "image")]


def _lazy(level: Any) -> Any:
    """zarr arrays go to napari as they are; other lazy views are wrapped in dask."""
    import zarr

    if isinstance(level, zarr.Array):
        return level
    import dask.array as da

    return da.from_array(level, chunks=(1024,) * len(level.shape), asarray=False)
