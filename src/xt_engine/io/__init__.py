"""Image readers behind one function, :func:`open_image`.

Every reader returns an :class:`ImageSource`: pyramid levels with axes ``yx`` / ``yxc`` /
``cyx`` whose ``read(level, y0, x0, y1, x1)`` gives a ``(C, h, w)`` numpy box. Formats:

* TIFF family (plain, BigTIFF, OME-TIFF, SVS, NDPI, generic tiled pyramids, pyramids as SubIFDs
  or reduced pages): :mod:`xt_engine.io.tiff`, chosen by suffix or by the TIFF magic bytes;
* vendor whole-slide formats OpenSlide reads and tifffile does not read itself (MIRAX .mrxs,
  Hamamatsu .vms / .vmu, Leica .scn, Ventana .bif, Philips TIFF, Trestle, Sakura):
  :mod:`xt_engine.io.openslide_reader`, chosen by content (the rule is in its docstring);
* DICOM whole-slide images (a folder of one series' .dcm files, or one of them):
  :mod:`xt_engine.io.dicom_reader` (wsidicom);
* zarr arrays and OME-Zarr images (NGFF 0.4 / 0.5): :mod:`xt_engine.io.zarr_reader`;
* PNG and JPEG (small images, decoded whole by Pillow): :mod:`xt_engine.io.pillow`;
* numpy / dask / zarr arrays and lists of levels: :mod:`xt_engine.io.array`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xt_engine.errors import InputError
from xt_engine.io.array import guess_axes, source_from_arrays
from xt_engine.io.dicom_reader import has_dicom_magic, is_dicom_folder
from xt_engine.io.openslide_reader import openslide_associated, slide_reader
from xt_engine.io.source import ImageSource, SqueezedArray

TIFF_SUFFIXES = (
    ".tif",
    ".tiff",
    ".svs",
    ".ome.tif",
    ".ome.tiff",
    ".btf",
    ".tf8",
    ".tf2",
    ".ndpi",
    ".scn",
    ".qptiff",
)
#: suffixes of the slide formats read by OpenSlide or wsidicom (beside TIFF_SUFFIXES; the napari
#: manifest's reader patterns cover both, and folders of .dcm files are opened as DICOM WSI)
SLIDE_SUFFIXES = (".mrxs", ".vms", ".vmu", ".bif", ".svslide", ".dcm")
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, both byte orders
ZARR_MARKERS = ("zarr.json", ".zattrs", ".zgroup", ".zarray")


def open_image(image: Any, axes: str | None = None) -> ImageSource:
    """Open a path (TIFF family, OpenSlide slide, DICOM WSI, zarr / OME-Zarr, PNG / JPEG), an
    array, a list of levels or an ImageSource.

    ``axes`` (e.g. "cyx") applies to arrays only; files state their own axes.
    Raises :class:`InputError` for missing, unreadable, corrupt or unsupported inputs.
    """
    if isinstance(image, ImageSource):
        return image
    if isinstance(image, str | os.PathLike):
        source = _open_path(Path(image))
        source.metadata.setdefault("path", str(Path(image).resolve()))
        return source
    if hasattr(image, "shape") or isinstance(image, list | tuple):
        return source_from_arrays(image, axes)
    raise InputError(
        f"cannot open an image from {type(image).__name__}",
        "pass a file path, a numpy / dask array or a list of pyramid levels",
    )


def _open_path(path: Path) -> ImageSource:
    if not path.exists():
        raise InputError(f"image {path} does not exist", "check the path")
    if not (path.is_file() or path.is_dir()):  # a FIFO, device or socket: open() could block
        raise InputError(
            f"{path} is not a regular file or folder (a pipe, device or socket)",
            "pass an image file or an OME-Zarr folder",
        )
    lower = path.name.lower()
    if _is_dicom(path, lower):
        from xt_engine.io.dicom_reader import open_dicom

        return open_dicom(path)
    if path.is_dir() or lower.endswith(".zarr"):
        if path.is_dir() and not any((path / m).exists() for m in ZARR_MARKERS):
            raise InputError(
                f"{path} is a folder but not a zarr store (no zarr.json / .zattrs / .zarray)",
                "pass an image file, or an OME-Zarr directory",
            )
        from xt_engine.io.zarr_reader import open_zarr

        return open_zarr(path)
    tiff_magic = _has_tiff_magic(path)
    reader, vendor = slide_reader(path, tiff_magic)
    if reader == "openslide" or (
        reader is None and not tiff_magic and lower.endswith(SLIDE_SUFFIXES)
    ):
        # (a slide suffix OpenSlide does not recognise: its error names the missing parts)
        from xt_engine.io.openslide_reader import open_openslide

        return open_openslide(path, vendor)
    if reader == "dicom":  # OpenSlide names DICOM too; wsidicom reads the series
        from xt_engine.io.dicom_reader import open_dicom

        return open_dicom(path)
    if lower.endswith(TIFF_SUFFIXES) or tiff_magic:
        from xt_engine.io.tiff import open_tiff

        source = open_tiff(path)
        if vendor is not None:  # e.g. "aperio", "hamamatsu", "generic-tiff"
            source.metadata.setdefault("vendor", vendor)
            if not source.associated:  # label / macro / thumbnail, read when called
                source.associated = openslide_associated(path)
        return source
    if lower.endswith((".png", ".jpg", ".jpeg")) or _has_pillow_magic(path):
        from xt_engine.io.pillow import open_pillow

        return open_pillow(path)
    raise InputError(
        f"{path.name}: unknown image format (suffix {path.suffix or 'none'!r})",
        "use a TIFF / BigTIFF / OME-TIFF / SVS / NDPI, a slide OpenSlide reads (MRXS, SCN, "
        "BIF, VMS, Philips TIFF), a DICOM WSI folder, PNG or JPEG or an OME-Zarr store "
        "(convert other formats, e.g. with bfconvert or vips tiffsave)",
    )


def _is_dicom(path: Path, lower: str) -> bool:
    """A DICOM file (suffix or DICM preamble) or a folder of them (not a zarr store)."""
    if path.is_dir():
        return not any((path / m).exists() for m in ZARR_MARKERS) and is_dicom_folder(path)
    return lower.endswith(".dcm") or has_dicom_magic(_head(path, 132))


def _has_tiff_magic(path: Path) -> bool:
    return _head(path)[:4] in TIFF_MAGIC


def _has_pillow_magic(path: Path) -> bool:
    return _head(path).startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"))


def _head(path: Path, size: int = 8) -> bytes:
    """The first ``size`` bytes of a file (its format's magic number)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as err:
        raise InputError(f"cannot read {path} ({err})", "check the file's permissions") from err


__all__ = [
    "SLIDE_SUFFIXES",
    "TIFF_SUFFIXES",
    "ImageSource",
    "SqueezedArray",
    "guess_axes",
    "is_dicom_folder",
    "open_image",
    "source_from_arrays",
]
