"""Training targets from QuPath GeoJSON exports, rasterised on the fly per crop.

QuPath's "Export objects as GeoJSON" writes a FeatureCollection (or a bare list of features);
each feature has a geometry in level-0 pixels and ``properties.classification.name``. Polygons
and multipolygons paint their class; points (and QuPath detections given as points) paint a
disc of ``point_radius`` px, the objects a detection head learns from (each connected
component of a class is one object). Class names map to ids through the model's class list
(``head.class_names``); unknown names are refused naming them. Pixels no annotation covers are
``IGNORE_INDEX`` (no loss there) or, with ``unlabelled="background"``, class 0.

:class:`AnnotationMask` is a lazy (H, W) int16 array: indexing a box rasterises only the
geometries that intersect it (a shapely STRtree), so no full-slide mask is ever written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from shapely import STRtree
from shapely.geometry import Point, box, shape
from shapely.geometry.base import BaseGeometry

from xt_engine.errors import InputError
from xt_engine.tasks.base import IGNORE_INDEX

ANNOTATION_SUFFIXES = (".geojson",)
UNLABELLED = ("ignore", "background")


def read_annotations(
    path: Path, class_names: list[str], point_radius: float = 4.0
) -> list[tuple[BaseGeometry, int]]:
    """(geometry, class id) of every classified feature of a QuPath GeoJSON file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(
            f"annotations {path} are not a readable GeoJSON file ({err})",
            "export the annotations again from QuPath (File > Export objects as GeoJSON)",
        ) from err
    features = data.get("features", []) if isinstance(data, dict) else data
    if not isinstance(features, list):
        raise InputError(f"annotations {path} hold no features", "export a FeatureCollection")
    ids = {name: i for i, name in enumerate(class_names)}
    out: list[tuple[BaseGeometry, int]] = []
    unknown: set[str] = set()
    for feature in features:
        props = feature.get("properties") or {}
        classification = props.get("classification") or {}
        name = classification.get("name") if isinstance(classification, dict) else None
        if name is None:
            continue  # unclassified objects carry no target
        if name not in ids:
            unknown.add(str(name))
            continue
        try:
            geometry = shape(feature["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(
                f"a feature of {path} has no valid geometry ({err})",
                "export the annotations again from QuPath",
            ) from err
        if isinstance(geometry, Point) or geometry.geom_type == "MultiPoint":
            geometry = geometry.buffer(point_radius)
        if not geometry.is_empty:
            out.append((geometry, ids[name]))
    if unknown:
        raise InputError(
            f"annotations {path} use classes {sorted(unknown)} the model does not have "
            f"(its classes: {class_names})",
            "add them to head.class_names in the config (in order of class id), or rename them "
            "in QuPath",
        )
    return out


class AnnotationMask:
    """A lazy (H, W) int16 label image painted from annotations (see the module docstring).
    Later features paint over earlier ones, as QuPath draws them."""

    ndim = 2

    def __init__(
        self,
        annotations: list[tuple[BaseGeometry, int]],
        shape_yx: tuple[int, int],
        unlabelled: str = "ignore",
    ) -> None:
        if unlabelled not in UNLABELLED:
            raise InputError(
                f"unlabelled={unlabelled!r} is unknown", f"use one of {', '.join(UNLABELLED)}"
            )
        self.shape = (int(shape_yx[0]), int(shape_yx[1]))
        self.dtype = np.dtype(np.int16)
        self.fill = IGNORE_INDEX if unlabelled == "ignore" else 0
        self.annotations = annotations
        self.tree = STRtree([g for g, _ in annotations]) if annotations else None

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        out = np.full((max(0, y1 - y0), max(0, x1 - x0)), self.fill, dtype=np.int16)
        if self.tree is None or out.size == 0:
            return out
        hits = sorted(int(i) for i in self.tree.query(box(x0, y0, x1, y1)))
        if not hits:
            return out
        from rasterio import features
        from rasterio.transform import Affine

        shapes = [(self.annotations[i][0], self.annotations[i][1]) for i in hits]
        painted = features.rasterize(
            shapes,
            out_shape=out.shape,
            transform=Affine.translation(x0, y0),
            fill=-32768,
            dtype="int16",
        )
        return np.where(painted == -32768, out, painted).astype(np.int16)


def annotation_mask(
    path: Path, shape_yx: tuple[int, int], class_names: list[str], unlabelled: str = "ignore"
) -> AnnotationMask:
    return AnnotationMask(read_annotations(path, class_names), shape_yx, unlabelled)
