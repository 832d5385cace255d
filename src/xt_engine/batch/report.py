"""The run report of a batch: ``OUT_DIR/report.csv`` and ``OUT_DIR/report.json``.

CSV: one row per image and class (an image without measurements, e.g. a failed one, has one
row with the class columns empty): the run columns :data:`RUN_COLUMNS` followed by the per-image
measurements each finished store holds (``xt.report``, :func:`xt_engine.export.report.report_rows`
with its columns :data:`~xt_engine.export.report.REPORT_COLUMNS`, ``image`` being the run
column). JSON: ``{"images": [...]}``, one object per image with the run columns and the whole
``report``. Both are written to a temporary file and renamed: a reader never sees half a report.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: image: the input path; store: NAME.zarr in the output folder; status: done | skipped |
#: failed; seconds: wall time of the image's last attempt (opening, planning, running);
#: regions: regions decoded by that attempt (a resumed store's earlier ones not counted);
#: regions_total: regions of the image's grid; regions_per_s: regions / run seconds;
#: attempts: 1 + the retries after a worker died
RUN_COLUMNS = (
    "image",
    "store",
    "status",
    "seconds",
    "regions",
    "regions_total",
    "regions_per_s",
    "device",
    "worker",
    "attempts",
    "error",
)


@dataclass
class ImageResult:
    """What became of one image (see :data:`RUN_COLUMNS`); ``report``: the store's
    ``xt.report`` (done and skipped images)."""

    image: str
    store: str
    status: str = "failed"
    seconds: float = 0.0
    regions: int = 0
    regions_total: int = 0
    run_seconds: float = 0.0
    device: str = ""
    worker: str = ""
    attempts: int = 1
    error: str = ""
    report: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def regions_per_s(self) -> float:
        return self.regions / self.run_seconds if self.run_seconds > 0 else 0.0

    def row(self) -> dict[str, Any]:
        values = asdict(self)
        values["regions_per_s"] = round(self.regions_per_s, 3)
        values["seconds"] = round(self.seconds, 3)
        return {key: values[key] for key in RUN_COLUMNS}


def write_report(out_dir: Path, results: list[ImageResult], stem: str = "report") -> Path:
    """``OUT_DIR/STEM.csv`` and ``STEM.json`` (see the module docstring); the CSV's path."""
    from xt_engine.export.report import REPORT_COLUMNS, report_rows

    measured = [c for c in REPORT_COLUMNS if c != "image"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*RUN_COLUMNS, *measured], lineterminator="\n")
    writer.writeheader()
    for result in results:
        rows = report_rows(result.report) if result.report and "classes" in result.report else []
        for row in rows or [{}]:
            writer.writerow(result.row() | {c: row.get(c, "") for c in measured})
    images = [result.row() | {"report": result.report} for result in results]
    csv_path = out_dir / f"{stem}.csv"
    _replace(csv_path, text.getvalue())
    _replace(out_dir / f"{stem}.json", json.dumps({"images": images}, indent=2))
    return csv_path


def read_report(path: Path) -> list[dict[str, str]]:
    """The rows of a report CSV."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
