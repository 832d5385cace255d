"""``xt export STORE --to FORMAT --out PATH``: a result store in the formats users work with.

Formats: ``geojson`` (QuPath-compatible polygons and points, :mod:`.geojson`), ``geotiff`` (a
COG in the scene's CRS, :mod:`.raster`), ``ome-tiff`` (a pyramidal label image with the pixel
size), ``csv`` / ``parquet`` (detections with level-0 and physical coordinates) and ``report``
(per-class areas and counts, ``.csv`` or ``.json``, :mod:`.report`).

Exports refuse an unfinished store unless ``partial``, never replace an existing file without
``overwrite`` (and never a folder, nor anything inside the store), and write to a temporary
file renamed into place at the end, so an interrupted export leaves nothing that looks complete.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xt_engine.errors import InputError
from xt_engine.export.result import ResultView, open_result

#: format -> (module, writer): imported when used (rasterio and shapely load slowly)
FORMATS: dict[str, tuple[str, str]] = {
    "geojson": ("geojson", "write_geojson"),
    "geotiff": ("raster", "write_geotiff"),
    "ome-tiff": ("raster", "write_ome_tiff"),
    "csv": ("report", "write_detections"),
    "parquet": ("report", "write_detections"),
    "report": ("report", "write_report"),
}


def _writer(to: str) -> Callable[[ResultView, Path], dict[str, Any]]:
    module, name = FORMATS[to]
    writer: Callable[[ResultView, Path], dict[str, Any]] = getattr(
        importlib.import_module(f"xt_engine.export.{module}"), name
    )
    return writer


def export_store(
    store: str | os.PathLike[str],
    to: str,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    partial: bool = False,
) -> dict[str, Any]:
    """Export ``store`` as ``to`` to the file ``out``; returns a summary of what was written."""
    if to not in FORMATS:
        raise InputError(f"unknown export format {to!r}", f"use one of {', '.join(FORMATS)}")
    result = open_result(store, partial=partial)
    target = Path(out)
    _check_target(target, result.path, overwrite)
    writer = _writer(to)
    if to in ("geojson", "geotiff", "ome-tiff") and not result.labels:
        raise InputError(
            f"{result.path} holds no label image (a detection or classification run)",
            "export its detections with --to csv, or its report with --to report",
        )
    if to == "geotiff" and result.georeference is None:
        raise InputError(
            f"{result.path} has no georeference (its source named no CRS)",
            "export a slide or plain image --to ome-tiff, or run on a georeferenced scene",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".xt-export-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        summary = writer(result, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"format": to, "out": str(target), **summary}


def _check_target(target: Path, store: Path, overwrite: bool) -> None:
    resolved, store_dir = target.resolve(), store.resolve()
    if resolved == store_dir or store_dir in resolved.parents:
        raise InputError(
            f"--out {target} lies inside the result store {store}",
            "write the export beside the store, not into it",
        )
    if target.is_dir():
        raise InputError(
            f"--out {target} is a folder", "name the file to write, e.g. OUT.geojson"
        )
    if target.exists() and not overwrite:
        raise InputError(
            f"{target} already exists", "add --overwrite to replace it, or choose another --out"
        )


__all__ = ["FORMATS", "export_store", "open_result"]
