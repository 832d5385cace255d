"""Segmentation and detections as a QuPath-compatible GeoJSON FeatureCollection, streamed.

Segmentation: every class but 0 (background) becomes (Multi)Polygon features with holes,
``objectType: annotation`` and ``classification: {name, color}``. Polygons are traced with
GDAL's polygonizer (``rasterio.features.shapes``) over bands of tile rows of the label image;
a polygon that touches a band's bottom edge stays open and is merged (shapely ``unary_union``)
with the polygons of the next band that touch its top edge, so nothing is cut at a region
border, and memory is bounded by one band plus the open polygons' outlines, never by the
slide. Detections (``detections.csv``) become Points, ``objectType: detection``, with the score
and the box size as ``measurements``.

Coordinates: level-0 pixels for slides and plain images; the scene's CRS for georeferenced
scenes, named in the (GDAL/QGIS-read) ``crs`` member. QuPath reads both kinds of features.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from rasterio import features
from rasterio.transform import Affine
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.ops import unary_union

from xt_engine.export.result import ResultView, crs_name, dumps
from xt_engine.store.detections import DETECTIONS_FILE

BAND_TILES = 1  # tile rows traced at once


def write_geojson(result: ResultView, out: Path) -> dict[str, int]:
    """Write ``out``; returns the feature counts per kind."""
    counts = {"annotations": 0, "detections": 0}
    a, b, c, d, e, f = result.level0_affine()
    to_output = [a, b, d, e, c, f]  # shapely's affine_transform order
    with out.open("w") as handle:
        handle.write('{"type":"FeatureCollection",')
        name = crs_name(result.georeference)
        if name is not None:
            handle.write(f'"crs":{dumps({"type": "name", "properties": {"name": name}})},')
        handle.write('"features":[')
        first = True
        if result.labels:
            for cls, polygon in trace_classes(result):
                geometry = affinity.affine_transform(polygon, to_output)
                first = _feature(handle, first, _annotation(result, cls, geometry))
                counts["annotations"] += 1
        for row in _detections(result):
            first = _feature(handle, first, _detection(result, row))
            counts["detections"] += 1
        handle.write("]}\n")
    return counts


def trace_classes(result: ResultView) -> Iterator[tuple[int, Polygon]]:
    """(class, polygon) for every connected area of each class > 0, in label-image pixel
    coordinates (x = column, y = row), merged across band borders."""
    labels = result.labels[0]
    y0, x0, y1, x1 = result.roi
    step = result.tile * BAND_TILES
    open_polygons: dict[int, list[Polygon]] = {}
    for top in range(y0, y1, step):
        bottom = min(top + step, y1)
        band = np.asarray(labels[top:bottom, x0:x1])
        found: dict[int, list[Polygon]] = {}
        transform = Affine.translation(x0, top)
        for geom, value in features.shapes(band, mask=band > 0, transform=transform):
            found.setdefault(int(value), []).append(shape(geom))
        for cls in sorted(set(found) | set(open_polygons)):
            polygons = found.get(cls, [])
            at_top = [p for p in polygons if p.bounds[1] <= top]
            rest = [p for p in polygons if p.bounds[1] > top]
            carried = open_polygons.pop(cls, [])
            merged = _parts(unary_union(carried + at_top)) if carried and at_top else (
                carried + at_top
            )
            still_open = []
            for polygon in merged + rest:
                if bottom < y1 and polygon.bounds[3] >= bottom:
                    still_open.append(polygon)
                else:
                    yield cls, polygon
            if still_open:
                open_polygons[cls] = still_open
    for cls, polygons in open_polygons.items():
        for polygon in polygons:
            yield cls, polygon


def _parts(geometry: Any) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry]
    if isinstance(geometry, MultiPolygon):
        return list(geometry.geoms)
    return [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon)]


def _classification(result: ResultView, cls: int) -> dict[str, Any]:
    name = result.names[cls] if cls < len(result.names) else f"class_{cls}"
    color = result.colors[cls][:3] if cls < len(result.colors) else [255, 0, 0]
    return {"name": name, "color": [int(v) for v in color]}


def _annotation(result: ResultView, cls: int, geometry: Polygon) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": mapping(geometry),
        "properties": {
            "objectType": "annotation",
            "classification": _classification(result, cls),
            "isLocked": False,
        },
    }


def _detections(result: ResultView) -> Iterator[dict[str, str]]:
    path = result.path / DETECTIONS_FILE
    if not path.exists():
        return
    with path.open(newline="") as handle:
        yield from csv.DictReader(handle)


def _detection(result: ResultView, row: dict[str, str]) -> dict[str, Any]:
    """A detection row (centres in level-0 pixels) as a Point feature."""
    y, x = float(row["y"]), float(row["x"])
    if result.georeference is not None:
        a, b, c, d, e, f = result.georeference["transform"]
        x, y = a * x + b * y + c, d * x + e * y + f
    cls = int(row["class"])
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": {
            "objectType": "detection",
            "classification": _classification(result, cls),
            "measurements": {
                "score": float(row["score"]),
                "height_px": float(row["height"]),
                "width_px": float(row["width"]),
            },
        },
    }


def _feature(handle: TextIO, first: bool, feature: dict[str, Any]) -> bool:
    handle.write(("" if first else ",") + dumps(feature) + "\n")
    return False
