"""A finished (or, with ``partial``, unfinished) result store opened for export.

Coordinates: the label image is at the inference level; ``downsample`` maps its pixels to
level-0 pixels; ``pixel_size`` / ``unit`` are those of a level-0 pixel (None when the source
stated none); ``georeference`` maps level-0 pixel corners to the scene's CRS.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from xt_engine.colors import class_colors
from xt_engine.config import XTConfig
from xt_engine.errors import InputError
from xt_engine.store.provenance import xt_attrs
from xt_engine.store.result_store import LABELS_PATH


@dataclass
class ResultView:
    """What an export needs from a result store (see the module docstring)."""

    path: Path
    xt: dict[str, Any]
    labels: list[zarr.Array]
    names: list[str]
    colors: list[list[int]]
    downsample: tuple[float, float]
    pixel_size: tuple[float, float] | None
    unit: str | None
    georeference: dict[str, Any] | None

    @property
    def complete(self) -> bool:
        return bool(self.xt.get("complete", False))

    @property
    def tile(self) -> int:
        """The label image's chunk side (one region's output tile)."""
        return int(self.labels[0].chunks[0]) if self.labels else 256

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of the analysed box at the inference level."""
        roi = self.xt.get("roi")
        if roi and len(roi) == 4:
            y0, x0, y1, x1 = (int(v) for v in roi)
            return y0, x0, y1, x1
        h, w = self.labels[0].shape
        return 0, 0, int(h), int(w)

    def level0_affine(self) -> tuple[float, float, float, float, float, float]:
        """Affine (a, b, c, d, e, f) from label pixels (col, row) to level-0 pixels, or to the
        CRS for a georeferenced scene."""
        dy, dx = self.downsample
        if self.georeference is None:
            return (dx, 0.0, 0.0, 0.0, dy, 0.0)
        a, b, c, d, e, f = self.georeference["transform"]
        return (a * dx, b * dy, c, d * dx, e * dy, f)

    def label_pixel_area(self) -> tuple[float, str] | None:
        """The physical area of one label pixel and its unit (um2 or m2), when known."""
        if self.pixel_size is None or self.unit not in ("micrometer", "meter"):
            return None
        dy, dx = self.downsample
        area = self.pixel_size[0] * dy * self.pixel_size[1] * dx
        return area, "um2" if self.unit == "micrometer" else "m2"


def open_result(path: str | os.PathLike[str], *, partial: bool = False) -> ResultView:
    """Open a result store written by ``xt infer``; an InputError when ``path`` is not one or
    (without ``partial``) when its run did not finish."""
    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
        xt: dict[str, Any] = xt_attrs(root)
    except (OSError, KeyError, ValueError, TypeError, FileNotFoundError) as err:
        raise InputError(
            f"{path} is not a napari-xt result store",
            "pass the OUT.zarr folder an `xt infer` run wrote",
        ) from err
    if not xt.get("complete", False) and not partial:
        raise InputError(
            f"{path} holds an unfinished run (xt.complete is false)",
            "finish it with `xt infer ... --resume`, or export what is there with --partial",
        )
    labels: list[zarr.Array] = []
    for k in range(int(xt.get("label_levels", 0))):
        node = root.get(f"{LABELS_PATH}/{k}")
        if isinstance(node, zarr.Array):
            labels.append(node)
    config = XTConfig.from_dict(xt["model_config"])
    source = xt.get("source", {})
    pixel = source.get("pixel_size")
    down = xt.get("downsample") or [1.0, 1.0]
    return ResultView(
        path=path,
        xt=xt,
        labels=labels,
        names=list(config.head.names()),
        colors=class_colors(config.head),
        downsample=(float(down[0]), float(down[1])),
        pixel_size=(float(pixel[0]), float(pixel[1])) if pixel else None,
        unit=source.get("unit") if pixel else None,
        georeference=xt.get("georeference"),
    )


def crs_name(georeference: dict[str, Any] | None) -> str | None:
    """An OGC URN for the CRS (``urn:ogc:def:crs:EPSG::32633``) or its WKT, None without."""
    if not georeference:
        return None
    if georeference.get("crs_epsg"):
        return f"urn:ogc:def:crs:EPSG::{int(georeference['crs_epsg'])}"
    wkt = georeference.get("crs_wkt")
    return str(wkt) if wkt else None


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
