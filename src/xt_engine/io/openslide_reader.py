"""Vendor whole-slide formats through OpenSlide (``openslide-python`` + the ``openslide-bin`` wheel).

Which reader opens a file is decided by its content (:func:`slide_reader`), not by its suffix:

* OpenSlide's own detection (``OpenSlide.detect_format``, which parses the file's header, not
  its name) names the vendor, or None for a file OpenSlide does not read (PNG, OME-Zarr, a
  plain stripped TIFF, multichannel or non-RGB TIFFs, ...);
* a file that starts with the TIFF magic and whose vendor is one of :data:`TIFFFILE_VENDORS`
  (``aperio`` SVS, ``hamamatsu`` NDPI, ``generic-tiff`` tiled pyramids such as ``vips tiffsave
  --tile --pyramid``) stays with tifffile (:mod:`xt_engine.io.tiff`): tifffile reads these
  layouts itself, keeps 16-bit / multichannel data, and is faster (``benchmarks/readers.py``);
* every other vendor OpenSlide names goes to OpenSlide: MIRAX ``.mrxs`` (an index file plus a
  data folder), Hamamatsu ``.vms`` / ``.vmu`` (not TIFF), Leica ``.scn`` (tifffile's first
  series may be the macro image), Ventana / Roche ``.bif`` (overlapping tiles tifffile would
  not stitch), Philips TIFF (levels as separate pages with sparse tiles), Trestle, Sakura
  ``.svslide`` and anything else OpenSlide adds. DICOM (``dicom``) is read by
  :mod:`xt_engine.io.dicom_reader` (wsidicom) instead, which also reads a folder of instances.

Levels are :class:`OpenSlideLevel` array-likes (:class:`~xt_engine.io.region_array.RegionArray`)
with axes ``yxc`` (RGB uint8): indexing one reads only that box, through one ``read_region``
call. OpenSlide returns RGBA (premultiplied in
C, un-premultiplied by openslide-python); pixels outside the scanned area have alpha 0 and
become white (255), partly transparent ones are composited on white. ``read_region`` takes its
location in level-0 pixels: a level box's origin is multiplied by the level's downsample and
rounded (exact for the usual power-of-two downsamples; off by under 0.5 / downsample level
pixels otherwise). One OpenSlide handle serves every level, behind a lock.

Pixel size: ``openslide.mpp-y`` / ``openslide.mpp-x`` in micrometers (None when the file
states none). ``metadata``: ``format="openslide"``, ``vendor`` (``openslide.vendor``),
``objective_power`` and the scanned area's ``bounds`` where the file has them. Associated images
(label, macro, thumbnail) are callables that read the image only when called; a slide whose
pixels tifffile reads gets OpenSlide's associated images too (:func:`openslide_associated`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xt_engine.errors import InputError
from xt_engine.io.region_array import RegionArray
from xt_engine.io.source import CORRUPT_FIX, ImageSource

#: OpenSlide vendors whose TIFF-based files tifffile reads itself (faster, and dtype-preserving).
TIFFFILE_VENDORS = frozenset({"aperio", "hamamatsu", "generic-tiff"})
#: OpenSlide vendors read by another of our readers.
DICOM_VENDORS = frozenset({"dicom"})


def openslide_vendor(path: Path) -> str | None:
    """The vendor OpenSlide detects from ``path``'s content, or None (not a slide it reads)."""
    try:
        import openslide
    except ImportError:  # pragma: no cover - a normal dependency; without it, tifffile only
        return None
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except (openslide.OpenSlideError, OSError, ValueError):
        return None


def slide_reader(path: Path, tiff_magic: bool) -> tuple[str | None, str | None]:
    """(reader, vendor): reader "openslide", "dicom", "tiff" or None (no slide format known).

    ``tiff_magic`` says whether the file starts with a TIFF header; the rule is the module's.
    """
    vendor = openslide_vendor(path)
    if vendor is None:
        return None, None
    if vendor in DICOM_VENDORS:
        return "dicom", vendor
    if tiff_magic and vendor in TIFFFILE_VENDORS:
        return "tiff", vendor
    return "openslide", vendor


class OpenSlideLevel(RegionArray):
    """One pyramid level of an OpenSlide slide as a lazy ``(H, W, 3)`` uint8 array; indexing it
    (see :class:`RegionArray`) reads the box through one ``read_region`` call."""

    def __init__(
        self, slide: Any, lock: threading.Lock, level: int, downsample: float, size: tuple[int, int]
    ) -> None:
        self._slide, self._lock, self.level, self.downsample = slide, lock, level, downsample
        width, height = size
        super().__init__((int(height), int(width), 3), np.uint8, self._read)

    def _read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        location = (round(x0 * self.downsample), round(y0 * self.downsample))  # level-0 pixels
        with self._lock:
            region = self._slide.read_region(location, self.level, (w, h))
        return rgba_on_white(np.asarray(region))


def rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 4) straight-alpha RGBA uint8 -> (h, w, 3) RGB composited on white."""
    if rgba.ndim != 3 or rgba.shape[2] < 3:
        raise ValueError(f"expected an (h, w, 3|4) image, got shape {rgba.shape}")
    rgb = np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)
    if rgba.shape[2] == 3:
        return rgb
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return rgb
    a = alpha[..., None].astype(np.uint16)
    blended = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return blended.astype(np.uint8)


def open_openslide(path: Path, vendor: str | None = None) -> ImageSource:
    """Open a slide OpenSlide reads as an :class:`ImageSource` (axes ``yxc``, RGB uint8)."""
    import openslide

    try:
        slide = openslide.OpenSlide(str(path))
        properties = dict(slide.properties)
        sizes = list(slide.level_dimensions)
        downsamples = [float(d) for d in slide.level_downsamples]
        associated_names = list(slide.associated_images.keys())
    except openslide.OpenSlideUnsupportedFormatError as err:
        raise InputError(
            f"{path.name} is not a slide OpenSlide can read ({err})",
            "check that the file is complete; for MIRAX (.mrxs) keep the data folder of the same "
            "name beside it, for .vms / .vmu the image files it lists",
        ) from err
    except (openslide.OpenSlideError, OSError, ValueError) as err:
        raise InputError(f"{path.name}: OpenSlide cannot open it ({err})", CORRUPT_FIX) from err
    lock = threading.Lock()
    levels = [
        OpenSlideLevel(slide, lock, i, downsamples[i], sizes[i])
        for i in range(len(sizes))
        if sizes[i][0] > 0 and sizes[i][1] > 0
    ]
    levels = _monotonic(levels)
    if not levels:
        raise InputError(f"{path.name}: OpenSlide lists no image level", CORRUPT_FIX)
    pixel_size = _mpp(properties)
    return ImageSource(
        levels=levels,
        axes="yxc",
        pixel_size=pixel_size,
        unit="micrometer" if pixel_size else None,
        name=path.name,
        metadata=_metadata(properties, vendor),
        associated={name: _associated(slide, lock, name) for name in associated_names},
    )


def _monotonic(levels: list[OpenSlideLevel]) -> list[OpenSlideLevel]:
    """The levels each no larger than the one before (OpenSlide orders them so already)."""
    kept: list[OpenSlideLevel] = []
    for level in levels:
        if not kept or (
            level.shape[0] <= kept[-1].shape[0] and level.shape[1] <= kept[-1].shape[1]
        ):
            kept.append(level)
    return kept


def _mpp(properties: dict[str, str]) -> tuple[float, float] | None:
    """(y, x) micrometers per level-0 pixel from OpenSlide's standard properties; for a Philips
    TIFF that states its spacing only per level, level 0's ``DICOM_PIXEL_SPACING`` (mm, "row"
    then "column" spacing, as DICOM orders it)."""
    try:
        y = float(properties.get("openslide.mpp-y", "nan"))
        x = float(properties.get("openslide.mpp-x", "nan"))
        if not (y > 0 and x > 0):
            key = "philips.PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE[0].DICOM_PIXEL_SPACING"
            values = [float(v.strip('"')) * 1000 for v in properties.get(key, "").split()]
            y, x = values if len(values) == 2 else (float("nan"), float("nan"))
    except ValueError:
        return None
    return (y, x) if y > 0 and x > 0 else None  # NaN compares False


def _metadata(properties: dict[str, str], vendor: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "format": "openslide",
        "vendor": properties.get("openslide.vendor", vendor),
    }
    power = properties.get("openslide.objective-power")
    if power:
        metadata["objective_power"] = power
    bounds = [properties.get(f"openslide.bounds-{k}") for k in ("x", "y", "width", "height")]
    if all(b is not None for b in bounds):
        metadata["bounds_xywh"] = [int(b) for b in bounds if b is not None]
    return metadata


def openslide_associated(path: Path) -> dict[str, Callable[[], np.ndarray]]:
    """The associated images OpenSlide lists for ``path`` (for a slide whose pixels tifffile
    reads, e.g. an SVS label and macro); {} when OpenSlide cannot open it."""
    import openslide

    try:
        slide = openslide.OpenSlide(str(path))
        names = list(slide.associated_images.keys())
    except (openslide.OpenSlideError, OSError, ValueError):
        return {}
    lock = threading.Lock()
    return {name: _associated(slide, lock, name) for name in names}


def _associated(slide: Any, lock: threading.Lock, name: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        with lock:
            image = slide.associated_images[name]
        return rgba_on_white(np.asarray(image))

    return read
