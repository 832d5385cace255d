"""Physical pixel size from TIFF-family metadata, always returned in micrometers.

Sources, first match wins (see :func:`tiff_pixel_size`): OME-XML ``PhysicalSizeY/X`` (with their
units), the Aperio SVS ``MPP = ...`` field of the ImageDescription, ImageJ's ``unit=`` with the
resolution tags, and finally the TIFF resolution tags (pixels per inch / centimeter), which
count only when they are plausibly a microscope's (:func:`plausible`): a plain TIFF
saved with a screen or print default (72 dpi) has no physical pixel size, not a 352.8 um one.
GeoTIFFs state their pixel size in their CRS's unit instead (:mod:`xt_engine.io.geotiff`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

#: micrometers per unit, for the unit spellings OME-XML, ImageJ and TIFF use.
UM_PER_UNIT = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "micrometer": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "dm": 1e5,
    "m": 1e6,
    "inch": 25400.0,
    "\\u00B5m": 1.0,
}
#: dots per inch that image and print software writes by default (never a microscope's)
DEFAULT_DPI = (72.0, 96.0, 150.0, 300.0, 600.0, 1200.0, 2400.0)
#: the largest pixel a resolution tag in inches / centimeters may state, in micrometers
MAX_TAG_PIXEL_UM = 100.0
_MPP = re.compile(r"\bMPP\s*=\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)")


def to_micrometer(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` as micrometers; None for an unknown unit or a non-positive value."""
    factor = UM_PER_UNIT.get((unit or "µm").strip())
    return value * factor if factor is not None and value > 0 else None


def ome_pixel_size(ome_xml: str, image_index: int = 0) -> tuple[float, float] | None:
    """(y, x) micrometers of OME-XML image ``image_index``, when both sizes are stated."""
    root = ET.fromstring(ome_xml)
    images = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Image"]
    if not images:
        return None
    image = images[min(image_index, len(images) - 1)]
    pixels = next((el for el in image if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if (
        pixels is None
        or "PhysicalSizeY" not in pixels.attrib
        or "PhysicalSizeX" not in pixels.attrib
    ):
        return None
    y = to_micrometer(float(pixels.get("PhysicalSizeY", 0)), pixels.get("PhysicalSizeYUnit"))
    x = to_micrometer(float(pixels.get("PhysicalSizeX", 0)), pixels.get("PhysicalSizeXUnit"))
    return (y, x) if y and x else None


def svs_mpp(description: str) -> tuple[float, float] | None:
    """(y, x) micrometers from an Aperio ImageDescription (``...|MPP = 0.25|...``)."""
    match = _MPP.search(description or "")
    mpp = float(match.group(1)) if match else 0.0
    return (mpp, mpp) if mpp > 0 else None


def resolution_pixel_size(tags: Any, imagej_unit: str | None = None) -> tuple[float, float] | None:
    """(y, x) micrometers from XResolution / YResolution (pixels per unit) and ResolutionUnit.

    ``tags`` is a tifffile ``TiffTags``. With ResolutionUnit NONE the size is unknown (None),
    unless ImageJ metadata names the unit (``imagej_unit``, e.g. "micron").
    """
    xres, yres, unit_tag = (tags.get(n) for n in ("XResolution", "YResolution", "ResolutionUnit"))
    if xres is None or yres is None:
        return None
    unit_code = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    unit = {2: "inch", 3: "cm"}.get(unit_code, imagej_unit if unit_code == 1 else None)
    if unit is None:
        return None
    sizes = [to_micrometer(1.0 / r, unit) if r > 0 else None for r in map(_ratio, (yres, xres))]
    y, x = sizes
    if not (y and x) or (unit_code in (2, 3) and not (plausible(y) and plausible(x))):
        return None
    return y, x


def plausible(micrometers: float) -> bool:
    """Whether a pixel size from a TIFF resolution tag in inches / centimeters is plausibly a
    microscope's: under ``MAX_TAG_PIXEL_UM`` and not one of the ``DEFAULT_DPI`` values."""
    dpi = 25400.0 / micrometers
    default = any(abs(dpi - d) <= 1e-3 * d for d in DEFAULT_DPI)
    return micrometers < MAX_TAG_PIXEL_UM and not default


def _ratio(tag: Any) -> float:
    """A RATIONAL tag value (numerator, denominator) or a plain number as a float."""
    value = tag.value
    if isinstance(value, tuple):
        return value[0] / value[1] if len(value) == 2 and value[1] else 0.0
    return float(value)
