"""TIFF family (plain, BigTIFF, OME-TIFF, Aperio SVS, pyramids) through tifffile.

The first series of the file is the image (for SVS the baseline, not the thumbnail / label /
macro series). Its pyramid levels come from ``series.levels``, which tifffile fills from
SubIFDs, from reduced-resolution pages (NewSubfileType 1) in the main IFD chain, from OME-TIFF
and from SVS. When tifffile instead lists the reduced levels as series of their own (e.g. a
shaped multi-page image with SubIFDs), the following series that are reduced-resolution copies
of the first (same dtype and channels, smaller by one factor along y and x) become its levels.

Each level is read by slicing tifffile's zarr store (``series.aszarr(level=i)`` opened with
``zarr.open``), so a box decodes only the tiles / strips it touches; uncompressed, contiguous
levels (e.g. a single-strip uncompressed TIFF, where one "chunk" would be the whole level) are
memory-mapped instead.

Axes: tifffile's ``Y``/``X`` become ``y``/``x``; one non-singleton channel-like axis (``S``
samples, ``C`` channels, or ``I``/``Q``, tifffile's names for a plain sequence of pages) becomes
``c``. Any other non-singleton axis (``T``, ``Z``, ...) is refused. Supported: RGB, grayscale and
multichannel images of any dtype tifffile reads (uint8, uint16, float32, ...), with the codecs
imagecodecs provides (JPEG, deflate, LZW, zstd, ...).
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from xt_engine.errors import InputError
from xt_engine.io.gdal_levels import gdal_levels
from xt_engine.io.geotiff import GeoInfo, is_geotiff, read_geotiff
from xt_engine.io.limits import check_tiff_levels
from xt_engine.io.metadata import ome_pixel_size, resolution_pixel_size, svs_mpp
from xt_engine.io.source import CORRUPT_FIX, ImageSource, SqueezedArray

_CHANNEL_AXES = "SCIQ"
_NATIVE = "<" if sys.byteorder == "little" else ">"


def open_tiff(path: Path) -> ImageSource:
    """Open a TIFF-family file as an :class:`ImageSource`: the pixel size in micrometers
    for microscopy metadata, in metres or degrees for a GeoTIFF (its CRS's kind, see
    :mod:`xt_engine.io.geotiff`), None when the file states none."""
    geo: GeoInfo | None = None
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:  # e.g. a GDAL GeoTIFF cut short: its directory comes last
                raise InputError(
                    f"{path.name} is truncated or damaged: no image directory can be read "
                    f"({os.path.getsize(path)} bytes)",
                    CORRUPT_FIX,
                )
            if not tif.series or not tif.series[0].shape:
                raise InputError(f"{path.name} holds no image", "pass a TIFF with image data")
            series = tif.series[0]
            axes, index = _plan_axes(path, series.axes, series.shape)
            pyramid = _pyramid(tif)
            _check_complete(path, [level for _, _, level in pyramid])
            check_tiff_levels(path.name, [level for _, _, level in pyramid])  # io/limits.py
            pixel_size = _pixel_size(tif, series)
            unit = "micrometer" if pixel_size else None
            if is_geotiff(_first_page(tif)):
                geo = read_geotiff(path, tif.geotiff_metadata)
                pixel_size, unit = geo.pixel_size, geo.unit
            levels = _levels(path, tif, pyramid, index)
            if geo is not None:  # GDAL reads GeoTIFF windows faster (see gdal_levels)
                axes, levels = _geo_levels(path, series, pyramid, axes, levels)
            metadata = {
                "format": "geotiff" if geo is not None else _kind(tif),
                "bigtiff": tif.is_bigtiff,
                "tiff_axes": series.axes,
                "compression": _compression_name(_first_page(tif)),
            }
    except InputError:
        raise
    except (
        tifffile.TiffFileError,
        ValueError,
        OSError,
        IndexError,
        KeyError,
        struct.error,
        RuntimeError,
        TypeError,
    ) as err:
        raise InputError(
            f"{path.name} is not a readable TIFF ({type(err).__name__}: {err})",
            "check that the file is a complete TIFF / OME-TIFF / SVS image",
        ) from err
    return ImageSource(
        levels=levels,
        axes=axes,
        pixel_size=pixel_size,
        unit=unit,
        name=path.name,
        metadata=metadata,
        nodata=geo.nodata if geo else None,
        georeference=geo.georeference if geo else None,
        channel_names=geo.channel_names if geo else None,
    )


def _plan_axes(path: Path, tiff_axes: str, shape: tuple[int, ...]) -> tuple[str, tuple]:
    """Our axes string and the index that drops the singleton non-image axes of the series."""
    channel = [i for i, a in enumerate(tiff_axes) if a in _CHANNEL_AXES and shape[i] > 1]
    extra = [
        f"{a}={shape[i]}"
        for i, a in enumerate(tiff_axes)
        if a not in "YX" and i not in channel[:1] and shape[i] > 1
    ]
    if "Y" not in tiff_axes or "X" not in tiff_axes or extra:
        raise InputError(
            f"{path.name} has axes {tiff_axes} {tuple(shape)}; the non-singleton axes "
            f"{', '.join(extra) or '(none: no Y/X)'} are not supported",
            "export one 2-D plane (a single time point and z-slice), with its channels, per file",
        )
    keep = [i for i, a in enumerate(tiff_axes) if a in "YX" or i in channel]
    axes = "".join("c" if i in channel else tiff_axes[i].lower() for i in keep)
    index = tuple(slice(None) if i in keep else 0 for i in range(len(tiff_axes)))
    return axes, index


def _pyramid(tif: tifffile.TiffFile) -> list[tuple[Any, int, Any]]:
    """(owner series, level index in it, level series) for every pyramid level, largest first."""
    first = tif.series[0]
    if len(first.levels) > 1 or first.kind in ("ome", "svs"):
        return [(first, i, level) for i, level in enumerate(first.levels)]
    pyramid = [(first, 0, first)]
    for other in tif.series[1:]:
        for number, level in enumerate(other.levels):
            if not _is_reduced_copy(level, first, pyramid[-1][2]):
                return pyramid
            pyramid.append((other, number, level))
    return pyramid


def _is_reduced_copy(other: Any, first: Any, previous: Any) -> bool:
    """Whether series ``other`` is a reduced-resolution level following ``previous``."""
    if other.keyframe is None or not other.keyframe.is_reduced or other.dtype != first.dtype:
        return False
    if len(other.shape) != len(first.shape) or other.axes.find("Y") != first.axes.find("Y"):
        return False
    iy, ix = first.axes.find("Y"), first.axes.find("X")
    if iy < 0 or ix != other.axes.find("X"):
        return False
    same = all(n == first.shape[i] for i, n in enumerate(other.shape) if i not in (iy, ix))
    smaller = other.shape[iy] < previous.shape[iy] and other.shape[ix] < previous.shape[ix]
    fy, fx = first.shape[iy] / other.shape[iy], first.shape[ix] / other.shape[ix]
    return same and smaller and abs(fy - fx) <= 0.1 * fx


def _levels(path: Path, tif: tifffile.TiffFile, pyramid: list, index: tuple) -> list[Any]:
    """Every pyramid level as an array with our axes (memmap, zarr array, or a squeezed view)."""
    squeeze = any(isinstance(i, int) for i in index)
    levels = []
    for owner, number, level in pyramid:
        array: np.memmap | zarr.Array | None = _memmap(path, tif, level)
        if array is None:
            array = _zarr_level(path, owner, number)
        levels.append(SqueezedArray(array, index) if squeeze else array)
    return levels


def _geo_levels(
    path: Path, series: Any, pyramid: list, axes: str, levels: list[Any]
) -> tuple[str, list[Any]]:
    """GDAL's levels of a GeoTIFF when they match tifffile's (bands and sizes), else the
    ``axes`` and ``levels`` tifffile gave."""
    iy, ix = series.axes.index("Y"), series.axes.index("X")
    shapes = [(int(level.shape[iy]), int(level.shape[ix])) for _, _, level in pyramid]
    channels = int(levels[0].shape[axes.index("c")]) if "c" in axes else 1
    gdal = gdal_levels(path, shapes, series.dtype)
    if gdal is None or gdal[0].count != channels:
        return axes, levels
    return gdal[0].axes, gdal


def _zarr_level(path: Path, owner: Any, number: int) -> zarr.Array:
    """Level ``number`` of series ``owner`` through tifffile's zarr store (one array)."""
    node = zarr.open(owner.aszarr(level=number), mode="r")
    if not isinstance(node, zarr.Array):
        raise InputError(f"{path.name}: pyramid level {number} is not one array", CORRUPT_FIX)
    return node


def _first_page(tif: tifffile.TiffFile) -> tifffile.TiffPage:
    """The file's first page; tifffile always reads it in full (never as a TiffFrame)."""
    page = tif.pages[0]
    if not isinstance(page, tifffile.TiffPage):
        raise tifffile.TiffFileError("the first page is not a full TIFF page")
    return page


def _compression_name(page: tifffile.TiffPage) -> str:
    """The COMPRESSION name; the bare number for a code tifffile does not know."""
    compression = page.compression  # a COMPRESSION member, typed as int by tifffile
    return compression.name if isinstance(compression, tifffile.COMPRESSION) else str(compression)


def _memmap(path: Path, tif: tifffile.TiffFile, level: Any) -> np.memmap | None:
    """An uncompressed, contiguous, native-endian level as a read-only memory map, else None."""
    if level.dataoffset is None or tif.byteorder != _NATIVE or level.dtype is None:
        return None
    dtype = np.dtype(tif.byteorder + np.dtype(level.dtype).char)
    return np.memmap(path, dtype=dtype, mode="r", offset=level.dataoffset, shape=level.shape)


def _check_complete(path: Path, levels: list[Any]) -> None:
    """Refuse a truncated file: tiles / strips that end beyond the end of the file.

    Only the first and last page of each level are checked (their tile offsets are already
    parsed), which catches a file cut short without reading any pixel data.
    """
    size = os.path.getsize(path)
    for number, level in enumerate(levels):
        pages = [p for p in (level.pages[0], level.pages[-1]) if p is not None]
        for page in pages:
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            counts = np.asarray(page.databytecounts, dtype=np.int64)
            ends = (offsets + counts)[counts > 0]
            if ends.size and int(ends.max()) > size:
                raise InputError(
                    f"{path.name} is truncated: level {number} needs data up to byte "
                    f"{int(ends.max())} but the file has {size} bytes",
                    CORRUPT_FIX,
                )


def _pixel_size(tif: tifffile.TiffFile, series: Any) -> tuple[float, float] | None:
    """Micrometers per level-0 pixel from OME-XML, SVS MPP or the resolution tags, else None."""
    page = _first_page(tif)
    try:
        if tif.is_ome and tif.ome_metadata:
            size = ome_pixel_size(tif.ome_metadata, 0)
            if size:
                return size
        if tif.is_svs or (page.description or "").startswith("Aperio"):
            size = svs_mpp(page.description)
            if size:
                return size
        keyframe = series.keyframe if series.keyframe is not None else page
        imagej_unit = (tif.imagej_metadata or {}).get("unit") if tif.is_imagej else None
        return resolution_pixel_size(keyframe.tags, imagej_unit)
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, SyntaxError):
        return None  # unparsable metadata: the image still opens, without a pixel size


def _kind(tif: tifffile.TiffFile) -> str:
    for name in ("ome", "svs", "ndpi", "imagej"):
        if getattr(tif, f"is_{name}", False):
            return name
    return "tiff"
