"""The result store's detection table, ``detections.csv``: one row per detection, centres and
sizes in level-0 pixels, written region by region in whole rows."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from xt_engine.tiling import Region

DETECTIONS_FILE = "detections.csv"
DETECTION_COLUMNS = ("region", "y", "x", "class", "class_name", "score", "height", "width")


def append_detections(
    path: Path,
    region: Region,
    rows: np.ndarray,
    downsample: tuple[float, float],
    names: list[str],
) -> None:
    """Append a region's (M, 6) rows ``(y, x, class, score, height, width)`` (inference-level
    pixels) to the table at ``path`` in one write, scaled to level-0 pixels by ``downsample``."""
    dy, dx = downsample
    text = io.StringIO()  # the region's rows, written in one call (whole rows)
    writer = csv.writer(text)
    if not path.exists():
        writer.writerow(DETECTION_COLUMNS)
    for y, x, cls, score, h, w in rows.tolist():
        name = names[int(cls)] if int(cls) < len(names) else f"class_{int(cls)}"
        writer.writerow(
            [
                region.index,
                f"{y * dy:.2f}",
                f"{x * dx:.2f}",
                int(cls),
                name,
                f"{score:.4f}",
                f"{h * dy:.2f}",
                f"{w * dx:.2f}",
            ]
        )
    with path.open("a", newline="") as handle:
        handle.write(text.getvalue())


def drop_unfinished_rows(path: Path, done: set[int]) -> None:
    """On resume: rows of regions not in ``done`` were written by an interrupted batch; a torn
    last row (a kill mid-write: no line end, or fields missing) goes too. The table is
    rewritten as a temporary file renamed over the old one, so a kill here loses nothing."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        text = handle.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the torn last row
    kept = [r for r in list(csv.reader(io.StringIO(text)))[1:] if _whole_row(r, done)]
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(DETECTION_COLUMNS)
        writer.writerows(kept)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _whole_row(row: list[str], done: set[int]) -> bool:
    """A detections row with every column, numbers where numbers belong, of a done region."""
    if len(row) != len(DETECTION_COLUMNS):
        return False
    try:
        region, cls = int(row[0]), int(row[3])
        [float(v) for v in (row[1], row[2], row[5], row[6], row[7])]
    except ValueError:
        return False
    return region in done and cls >= 0
