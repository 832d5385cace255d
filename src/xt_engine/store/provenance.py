"""The result store's provenance: the ``xt`` root attributes (what ran, on what, with which
determinants) and their check on resume."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zarr

from xt_engine.config import XTConfig
from xt_engine.errors import InputError
from xt_engine.io.source import ImageSource
from xt_engine.tiling import RegionGrid


def check_determinants(path: Path, recorded: dict[str, Any], fresh: dict[str, Any]) -> None:
    """An InputError naming the first field whose recorded value differs from ``fresh``'s,
    also a field recorded that this run has not (e.g. ``quantize``, present only when set)."""

    def short(v: object) -> str:
        return f"{v[:12]}..." if isinstance(v, str) and len(v) > 16 else repr(v)

    extra = {key: None for key in sorted(recorded) if key not in fresh}
    for key, value in (fresh | extra).items():
        if recorded.get(key) != json.loads(json.dumps(value)):  # attrs hold JSON
            raise InputError(
                f"{path} was written by another run ({key} differs: recorded "
                f"{short(recorded.get(key))}, this run {short(value)})",
                "resume with the same model weights, settings and input, or write a new --out",
            )


def xt_attrs(root: zarr.Group) -> dict[str, Any]:
    """A copy of the root's ``xt`` attributes (the provenance) as a plain dict; KeyError when
    the group has none."""
    value = root.attrs["xt"]
    if not isinstance(value, dict):
        raise KeyError("xt attributes are not a mapping")
    return dict(value)


def source_nodata(source: ImageSource) -> float | str | None:
    """The nodata value as JSON can hold it (NaN and infinities as strings)."""
    value = source.nodata
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else str(value)


def effective_resolution(source: ImageSource, level: int) -> dict[str, Any]:
    """The (y, x) pixel size the run reads at (``pixel_size x downsample(level)``, None
    without one), its unit, and whether the level is a resampled one
    (:mod:`xt_engine.io.resample`), with the level it was resized from."""
    down = source.downsample(level)
    size = source.pixel_size
    resampled = level in source.metadata.get("resampled_levels", ())
    return {
        "effective_pixel_size": [size[0] * down[0], size[1] * down[1]] if size else None,
        "pixel_unit": source.unit if size else None,
        "resampled": resampled,
        **({"resampled_from": source.metadata.get("resampled_from")} if resampled else {}),
    }


def provenance(
    source: ImageSource, level: int, grid: RegionGrid, config: XTConfig, depth: int
) -> dict[str, Any]:
    from xt_engine import __version__

    return {
        "complete": False,
        "started": datetime.now(UTC).isoformat(),
        "software": f"napari-xt {__version__}",
        "source_path": str(source.metadata.get("path", source.name)),
        "source": {
            "name": source.name,
            "shape_yx": list(source.shape_yx(0)),
            "dtype": str(source.dtype),
            "channels": source.num_channels,
            "format": source.metadata.get("format"),
            "vendor": source.metadata.get("vendor"),
            "pixel_size": list(source.pixel_size) if source.pixel_size else None,
            "unit": source.unit,
            "nodata": source_nodata(source),
            "channel_names": source.channel_names,
        },
        "georeference": source.georeference.to_dict() if source.georeference else None,
        "level": level,
        "downsample": list(source.downsample(level)),
        **effective_resolution(source, level),
        "roi": list(grid.box),
        "region_size": grid.region_size,
        "overlap": grid.overlap,
        "num_regions": len(grid),
        "label_levels": depth,
        "model_config": config.to_dict(),
    }
