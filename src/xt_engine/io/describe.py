"""What ``xt info`` shows about an :class:`ImageSource`: one dict, printed as JSON or as text.

Keys (JSON and text alike): ``name``, ``format``, ``vendor``, ``axes``, ``dtype``, ``channels``,
``channel_names``, ``levels`` (``[height, width]`` per level, level 0 first),
``level_pixel_size`` (``[y, x]`` per level in ``unit``: the level-0 pixel size times the level's
downsample; None without a pixel size), ``pixel_size`` and ``unit`` (level 0), ``crs``
(``"EPSG:<code>"`` where the CRS has one, else its WKT; None for an image without
georeference), ``nodata`` (NaN / infinities as strings) and ``associated`` (names of the
slide's associated images, e.g. label, macro, thumbnail; none is read).
"""

from __future__ import annotations

from typing import Any

from xt_engine.io.source import ImageSource

_WKT_SHOWN = 48  # characters of a WKT shown in text output


def describe(source: ImageSource) -> dict[str, Any]:
    """The ``xt info`` fields of ``source`` as JSON-ready values (reads no pixels)."""
    sizes = [list(source.shape_yx(k)) for k in range(source.num_levels)]
    level_pixel_size = None
    if source.pixel_size:
        py, px = source.pixel_size
        level_pixel_size = [
            [py * dy, px * dx] for dy, dx in map(source.downsample, range(source.num_levels))
        ]
    return {
        "name": source.name,
        "format": source.metadata.get("format"),
        "vendor": source.metadata.get("vendor"),
        "axes": source.axes,
        "dtype": str(source.dtype),
        "channels": source.num_channels,
        "channel_names": source.channel_names,
        "levels": sizes,
        "level_pixel_size": level_pixel_size,
        "pixel_size": list(source.pixel_size) if source.pixel_size else None,
        "unit": source.unit,
        "crs": _crs(source),
        "nodata": _nodata(source.nodata),
        "associated": sorted(source.associated),
    }


def info_lines(info: dict[str, Any]) -> list[str]:
    """``describe``'s dict as aligned text lines (one per key; levels one per line)."""
    lines = []
    for key, value in info.items():
        if key == "levels":
            continue
        if key == "level_pixel_size":
            lines.extend(_level_lines(info["levels"], value, info.get("unit")))
            continue
        if key == "crs" and isinstance(value, str) and not value.startswith("EPSG:"):
            value = f"WKT {value[:_WKT_SHOWN]}..." if len(value) > _WKT_SHOWN else f"WKT {value}"
        if isinstance(value, list) and key in ("channel_names", "associated"):
            value = ", ".join(map(str, value)) if value else None
        lines.append(f"{key:16s} {value}")
    return lines


def _level_lines(sizes: list[list[int]], pixel: list[list[float]] | None, unit: Any) -> list[str]:
    lines = [f"{'levels':16s} {len(sizes)}"]
    for k, (h, w) in enumerate(sizes):
        size = f"  {pixel[k][0]:.4g} x {pixel[k][1]:.4g} {unit or ''}".rstrip() if pixel else ""
        lines.append(f"{'  level ' + str(k):16s} {h} x {w}{size}")
    return lines


def _crs(source: ImageSource) -> str | None:
    geo = source.georeference
    if geo is None:
        return None
    if geo.crs_epsg is not None:
        return f"EPSG:{geo.crs_epsg}"
    return geo.crs_wkt


def _nodata(value: float | None) -> float | str | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else str(value)
