"""The per-image report: what a run found, in pixels and, where the pixel size is known, in
physical units; and the detections table with physical coordinates.

Segmentation: per class the label pixels (at the inference level), their level-0 pixel area,
the area in um2 and mm2 (slides) or m2 and km2 (scenes) when the source states a pixel size in
micrometres or metres, and the fraction of the analysed box; ``foreground_fraction``: the
non-background share. Detection: per class the count and mean score. Classification: the top-k
classes. Counting streams the level-0 label image one band of tiles at a time.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from xt_engine.export.result import ResultView
from xt_engine.store.detections import DETECTIONS_FILE

TOP_K = 5
REPORT_COLUMNS = (
    "image",
    "class",
    "label_pixels",
    "level0_pixels",
    "area",
    "area_unit",
    "fraction",
    "detections",
    "mean_score",
)


def measure(result: ResultView) -> dict[str, Any]:
    """The report of ``result`` (see the module docstring) as a JSON-ready dict."""
    names = result.names
    report: dict[str, Any] = {"image": result.xt.get("source", {}).get("name")}
    counts = _label_counts(result, len(names)) if result.labels else None
    per_class: list[dict[str, Any]] = []
    detections = _detection_stats(result)
    area = result.label_pixel_area()
    dy, dx = result.downsample
    for cls, name in enumerate(names):
        row: dict[str, Any] = {"class": name}
        if counts is not None:
            total = int(counts.sum())
            row["label_pixels"] = int(counts[cls])
            row["level0_pixels"] = round(float(counts[cls]) * dy * dx, 1)
            row["fraction"] = round(float(counts[cls]) / total, 6) if total else 0.0
            if area is not None:
                value, unit = area
                row["area"] = float(counts[cls]) * value
                row["area_unit"] = unit
                row["area_large"] = row["area"] / 1e6  # um2 -> mm2, m2 -> km2
                row["area_large_unit"] = "mm2" if unit == "um2" else "km2"
        if cls in detections:
            row["detections"], row["mean_score"] = detections[cls]
        per_class.append(row)
    report["classes"] = per_class
    if counts is not None and counts.sum():
        report["foreground_fraction"] = round(float(counts[1:].sum() / counts.sum()), 6)
    if detections:
        report["detections"] = int(sum(n for n, _ in detections.values()))
    classification = result.xt.get("classification")
    if classification:
        probs = list(classification.get("probabilities", []))
        order = sorted(range(len(probs)), key=lambda i: -probs[i])[:TOP_K]
        report["top_classes"] = [
            {"class": names[i] if i < len(names) else str(i), "probability": probs[i]}
            for i in order
        ]
    foreground = result.xt.get("foreground")
    if foreground:
        report["regions_run"] = foreground.get("regions_run")
        report["regions_skipped"] = foreground.get("regions_skipped")
    return report


def _label_counts(result: ResultView, num_classes: int) -> np.ndarray:
    labels = result.labels[0]
    y0, x0, y1, x1 = result.roi
    step = int(labels.chunks[0])
    counts = np.zeros(max(num_classes, 256), np.int64)
    for top in range(y0, y1, step):
        band = np.asarray(labels[top : min(top + step, y1), x0:x1])
        counts += np.bincount(band.ravel(), minlength=counts.size)[: counts.size]
    return counts[:num_classes]


def _detection_stats(result: ResultView) -> dict[int, tuple[int, float]]:
    path = result.path / DETECTIONS_FILE
    if not path.exists():
        return {}
    sums: dict[int, list[float]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            entry = sums.setdefault(int(row["class"]), [0, 0.0])
            entry[0] += 1
            entry[1] += float(row["score"])
    return {cls: (int(n), round(s / n, 4)) for cls, (n, s) in sums.items()}


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as table rows, one per class (many images' rows concatenate)."""
    rows = []
    for entry in report["classes"]:
        rows.append({key: entry.get(key, "") for key in REPORT_COLUMNS} | {
            "image": report.get("image")
        })
    return rows


def write_report(result: ResultView, out: Path) -> dict[str, Any]:
    """``out`` as ``.json`` (the whole report) or ``.csv`` (one row per class)."""
    report = measure(result)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(report, indent=2))
    else:
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS)
            writer.writeheader()
            writer.writerows(report_rows(report))
    return report


TABLE_COLUMNS = ("y", "x", "class", "class_name", "score", "height", "width")


def write_detections(result: ResultView, out: Path) -> dict[str, Any]:
    """Detections with level-0 pixel centres and, where known, physical / CRS coordinates:
    ``y_um, x_um`` (slides) or ``crs_x, crs_y`` (scenes). CSV, or Parquet (``.parquet``, needs
    pyarrow)."""
    rows = []
    path = result.path / DETECTIONS_FILE
    if path.exists():
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    table: list[dict[str, Any]] = []
    for row in rows:
        y, x = float(row["y"]), float(row["x"])
        entry: dict[str, Any] = {k: row[k] for k in TABLE_COLUMNS}
        if result.georeference is not None:
            a, b, c, d, e, f = result.georeference["transform"]
            entry["crs_x"], entry["crs_y"] = a * x + b * y + c, d * x + e * y + f
        elif result.pixel_size is not None and result.unit == "micrometer":
            entry["y_um"], entry["x_um"] = y * result.pixel_size[0], x * result.pixel_size[1]
        table.append(entry)
    if out.suffix.lower() == ".parquet":
        _write_parquet(table, out)
    else:
        with out.open("w", newline="") as handle:
            fields = list(table[0]) if table else list(TABLE_COLUMNS)
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(table)
    return {"detections": len(table)}


def _write_parquet(table: list[dict[str, Any]], out: Path) -> None:
    from xt_engine.errors import InputError

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise InputError(
            "Parquet export needs pyarrow, which is not installed",
            "pip install pyarrow, or export --to csv",
        ) from err
    pq.write_table(pa.Table.from_pylist(table), str(out))
