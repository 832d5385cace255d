"""DICOM whole-slide images (VL Whole Slide Microscopy, one series) through wsidicom.

Input: a folder of ``.dcm`` instances of one slide, or one instance file (its folder is opened
and only the instances of that file's series are used). Every file's header is read first
(pydicom, without pixel data): a WSI instance that cannot be parsed, or one that wsidicom then
leaves out, is an :class:`InputError` naming it (a truncated or corrupt file never silently
drops a level); a series without a volume (pyramid) instance, or whose largest level is marked
``RESAMPLED`` (the full-resolution instance is missing), is refused too. A folder holding
several series is refused with the fix of naming one file of the wanted series.

Levels are :class:`DicomLevel` array-likes (see :mod:`xt_engine.io.region_array`), one per
pyramid level of wsidicom's selected pyramid, largest first, axes ``yxc`` (RGB, 3 samples) or
``yx`` (monochrome), uint8 (other bit depths are refused); indexing reads only that box through
``WsiDicom.read_region`` (the frames it touches), behind one lock. Pixel size: the level-0
Pixel Spacing (mm) in micrometers. ``metadata``: ``format="dicom"``, ``vendor`` (the
Manufacturer, where stated), ``model`` and ``series_uid``. Associated images: ``label`` and
``overview`` where the series has them, read when called.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xt_engine.errors import InputError
from xt_engine.io.region_array import RegionArray
from xt_engine.io.source import CORRUPT_FIX, ImageSource

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
# wsidicom logs (with tracebacks) the files it skips; without a handler Python would print them
# to stderr. What matters is raised here as an InputError instead.
logging.getLogger("wsidicom").addHandler(logging.NullHandler())
logging.getLogger("wsidicom").propagate = False


def has_dicom_magic(head: bytes) -> bool:
    """Whether a file's first 132 bytes are a DICOM Part 10 preamble (``DICM`` at 128)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_dicom_folder(path: Path) -> bool:
    """A folder holding at least one ``.dcm`` file (or a file with the DICM magic) at its top."""
    try:
        entries = sorted(p for p in path.iterdir() if p.is_file())
    except OSError:
        return False
    return any(p.suffix.lower() == ".dcm" or _sniff(p) for p in entries[:64])


class DicomLevel(RegionArray):
    """One pyramid level of a DICOM WSI as a lazy ``(H, W, C)`` or ``(H, W)`` uint8 array;
    indexing it (see :class:`RegionArray`) reads the box through ``WsiDicom.read_region``."""

    def __init__(
        self, wsi: Any, lock: threading.Lock, level: int, size: tuple[int, int], samples: int
    ) -> None:
        self._wsi, self._lock, self.level, self._samples = wsi, lock, level, samples
        width, height = size
        shape = (int(height), int(width), samples) if samples > 1 else (int(height), int(width))
        super().__init__(shape, np.uint8, self._read)

    def _read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        with self._lock:
            data = np.asarray(self._wsi.read_region((x0, y0), self.level, (w, h), as_array=True))
        data = data.reshape(h, w, -1)[..., : self._samples]
        return np.ascontiguousarray(data if self._samples > 1 else data[..., 0], dtype=np.uint8)


def open_dicom(path: Path) -> ImageSource:
    """Open a DICOM WSI (folder of one series, or one of its files) as an ImageSource."""
    from wsidicom import WsiDicom

    folder = path if path.is_dir() else path.parent
    files = _series_files(path, folder)
    try:
        wsi = WsiDicom.open(files)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - wsidicom's errors share no base class
        raise InputError(
            f"{path.name}: wsidicom cannot open the slide ({type(err).__name__}: {err})",
            "check that every instance of the series is complete and in the folder",
        ) from err
    used = {Path(str(f)).resolve() for f in (wsi.files or [])}
    skipped = [f for f in files if f.resolve() not in used]
    if skipped:
        names = ", ".join(f.name for f in skipped[:3])
        raise InputError(
            f"{path.name}: {len(skipped)} instance(s) of the series cannot be read ({names})",
            CORRUPT_FIX,
        )
    return _source(path, wsi)


def _source(path: Path, wsi: Any) -> ImageSource:
    base = wsi.levels.base_level
    image_type = base.datasets[0].as_dataset().get("ImageType") or []
    if "RESAMPLED" in [str(v).upper() for v in image_type]:
        raise InputError(
            f"{path.name}: the series' full-resolution instance is missing (its largest level, "
            f"{base.size.width} x {base.size.height}, is RESAMPLED)",
            "copy every .dcm file of the slide into the folder",
        )
    samples = int(base.datasets[0].samples_per_pixel)
    bits = int(base.datasets[0].as_dataset().get("BitsAllocated", 8))
    if bits != 8 or samples not in (1, 3):
        raise InputError(
            f"{path.name}: {samples}-sample, {bits}-bit DICOM slides are not supported",
            "use an 8-bit RGB or monochrome DICOM WSI (or convert it to OME-TIFF)",
        )
    lock = threading.Lock()
    levels = [
        DicomLevel(wsi, lock, level.level, (level.size.width, level.size.height), samples)
        for level in wsi.levels
    ]
    mpp = wsi.levels.base_level.mpp  # SizeMm named, but micrometers per pixel
    pixel_size = (float(mpp.height), float(mpp.width)) if mpp else None
    equipment = wsi.metadata.equipment
    vendor = _known(getattr(equipment, "manufacturer", None))
    metadata = {
        "format": "dicom",
        "vendor": vendor,
        "model": _known(getattr(equipment, "model_name", None)),
        "series_uid": str(base.uids.series_instance) if base.uids else None,
    }
    return ImageSource(
        levels=levels,
        axes="yxc" if samples > 1 else "yx",
        pixel_size=pixel_size,
        unit="micrometer" if pixel_size else None,
        name=path.name,
        metadata=metadata,
        associated=_associated(wsi, lock),
    )


def _associated(wsi: Any, lock: threading.Lock) -> dict[str, Callable[[], np.ndarray]]:
    readers: dict[str, Callable[[], Any]] = {}
    if wsi.labels:
        readers["label"] = wsi.read_label
    if wsi.overviews:
        readers["overview"] = wsi.read_overview

    def reader(read: Callable[[], Any]) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:
            with lock:
                image = read()
            rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
            return np.ascontiguousarray(rgb, dtype=np.uint8)

        return call

    return {name: reader(read) for name, read in readers.items()}


def _known(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text if text and text != "Unknown" else None


def _series_files(path: Path, folder: Path) -> list[Path]:
    """The WSI instance files of ``path``'s series (of the folder's one series)."""
    import pydicom

    series: dict[str, list[Path]] = {}
    volumes: set[str] = set()  # the series with a pyramid (VOLUME) instance
    for candidate in sorted(p for p in folder.iterdir() if p.is_file()):
        if candidate.suffix.lower() != ".dcm" and not _sniff(candidate):
            continue
        try:
            header = pydicom.dcmread(candidate, stop_before_pixels=True)
        except Exception as err:  # noqa: BLE001 - pydicom raises many types on bad files
            if candidate == path or candidate.suffix.lower() == ".dcm":
                raise InputError(
                    f"{candidate.name} is not a readable DICOM file ({type(err).__name__}: {err})",
                    CORRUPT_FIX,
                ) from err
            continue
        if str(header.get("SOPClassUID", "")) != WSI_SOP_CLASS:
            continue
        _check_complete(candidate, header)
        series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append(candidate)
        if "VOLUME" in [str(v).upper() for v in header.get("ImageType", [])]:
            volumes.add(str(header.get("SeriesInstanceUID", "")))
    if path.is_file():
        wanted = [uid for uid, members in series.items() if path in members]
        if not wanted:
            raise InputError(
                f"{path.name} is not a DICOM whole-slide image instance",
                "pass a .dcm file (or the folder) of a VL Whole Slide Microscopy series",
            )
        _check_volume(path, wanted[0] in volumes)
        return series[wanted[0]]
    if not series:
        raise InputError(
            f"{path.name} holds no DICOM whole-slide image instance",
            "pass a folder of .dcm files of a VL Whole Slide Microscopy series",
        )
    if len(series) > 1:
        raise InputError(
            f"{path.name} holds {len(series)} DICOM series",
            "pass one .dcm file of the slide to open: its series is then read",
        )
    _check_volume(path, bool(volumes))
    return next(iter(series.values()))


def _check_volume(path: Path, has_volume: bool) -> None:
    if not has_volume:
        raise InputError(
            f"{path.name}: the DICOM series has no pyramid (VOLUME) instance, only a label / "
            "overview",
            "copy every .dcm file of the slide (its image levels) into the folder",
        )


def _check_complete(path: Path, header: Any) -> None:
    """Refuse an uncompressed instance whose file is shorter than its frames' bytes (a cut
    encapsulated one fails when wsidicom indexes its fragments)."""
    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed:
        return
    frames = int(header.get("NumberOfFrames", 1) or 1)
    bits = int(header.get("BitsAllocated", 8) or 8)
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    need = rows * columns * int(header.get("SamplesPerPixel", 1) or 1) * bits // 8 * frames
    size = path.stat().st_size
    if size < need:
        raise InputError(
            f"{path.name} is truncated: its {frames} frames need {need} bytes, the file has {size}",
            CORRUPT_FIX,
        )


def _sniff(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return has_dicom_magic(handle.read(132))
    except OSError:
        return False
