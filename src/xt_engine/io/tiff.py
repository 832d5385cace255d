"""TIFF family (plain, BigTIFF, OME-TIFF, SVS, pyramids) through tifffile's zarr store.

Levels are read by slicing the zarr arrays directly (faster per tile than going through dask).
"""

from __future__ import annotations

from pathlib import Path

import tifffile
import zarr

from xt_engine.errors import InputError
from xt_engine.io.source import ImageSource, SqueezedArray

_AXES = {"Y": "y", "X": "x", "S": "c", "C": "c"}


def open_tiff(path: Path) -> ImageSource:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            series_axes = series.axes
            pixel_size = _pixel_size(tif)
            store = series.aszarr()
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
        raise InputError(
            f"{path.name} is not a readable TIFF ({err})", "check that the file is a complete TIFF"
        ) from err
    node = zarr.open(store, mode="r")
    arrays = (
        [node]
        if isinstance(node, zarr.Array)
        else [node[k] for k in sorted(node.array_keys(), key=int)]
    )
    keep = [i for i, a in enumerate(series_axes) if a in _AXES]
    dropped = [a for i, a in enumerate(series_axes) if i not in keep]
    levels = []
    for array in arrays:
        if any(array.shape[i] != 1 for i, a in enumerate(series_axes) if i not in keep):
            raise InputError(
                f"{path.name} has extra non-singleton axes {''.join(dropped)} ({series_axes})",
                "export a single 2-D plane (with channels) per file",
            )
        index = tuple(slice(None) if i in keep else 0 for i in range(len(series_axes)))
        levels.append(SqueezedArray(array, index) if dropped else array)
    axes = "".join(_AXES[series_axes[i]] for i in keep)
    return ImageSource(
        levels=levels, axes=axes, pixel_size=pixel_size, unit="micrometer", name=path.name
    )


def _pixel_size(tif: tifffile.TiffFile) -> tuple[float, float] | None:
    """Microns per pixel from OME metadata or the resolution tags, when stated."""
    try:
        if tif.is_ome and tif.ome_metadata:
            meta = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (meta[0] if isinstance(meta, list) else meta)["Pixels"]
            if "PhysicalSizeY" in pixels and "PhysicalSizeX" in pixels:
                return float(pixels["PhysicalSizeY"]), float(pixels["PhysicalSizeX"])
        if tif.is_svs:
            mpp = tif.pages[0].description.split("MPP = ")[1].split("|")[0]
            return float(mpp), float(mpp)
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    return None
