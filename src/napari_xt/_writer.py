"""napari writers: Labels -> OME-Zarr (NGFF 0.5 labels image), Points -> CSV (no Qt).

Labels are copied level by level in row bands, so a lazy whole-slide result is never loaded
whole. Points keep their features (class, score, size) as CSV columns.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from xt_engine.store.ngff import NGFF_VERSION

BAND_ROWS = 2048


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a (multiscale) 2-D Labels layer as an OME-Zarr labels image at ``path``."""
    levels = list(data) if meta.get("multiscale") else [data]
    if len(levels[0].shape) != 2:
        raise ValueError("napari-xt writes 2-D labels only; slice the layer to 2-D first")
    root: Any = zarr.open_group(path, mode="w", zarr_format=3)  # (zarr types attributes JSON)
    scale = [float(s) for s in (meta.get("scale") or (1.0, 1.0))[-2:]]
    datasets = []
    for k, level in enumerate(levels):
        shape = tuple(int(s) for s in level.shape)
        out = root.create_array(
            str(k),
            shape=shape,
            dtype=np.dtype(level.dtype),
            chunks=(min(shape[0], 512), min(shape[1], 512)),
            fill_value=0,
            dimension_names=("y", "x"),
        )
        for y in range(0, shape[0], BAND_ROWS):
            out[y : y + BAND_ROWS] = np.asarray(level[y : y + BAND_ROWS])
        factor = [levels[0].shape[i] / shape[i] for i in range(2)]
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [scale[0] * factor[0], scale[1] * factor[1]]}
                ],
            }
        )
    features = meta.get("features")
    properties = []
    if features is not None and "class" in getattr(features, "columns", []):
        index = features["index"] if "index" in features.columns else range(len(features))
        properties = [
            {"label-value": int(i), "class": str(c)}
            for i, c in zip(index, features["class"], strict=True)
        ]
    root.attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": meta.get("name", "labels"),
                "axes": [{"name": a, "type": "space"} for a in "yx"],
                "datasets": datasets,
            }
        ],
        "image-label": {"version": NGFF_VERSION, "properties": properties},
    }
    return [path]


def write_points(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Points layer as CSV: one row per point, ``y, x`` then every feature column."""
    coords = np.asarray(data)
    features: Any = meta.get("features")
    columns = list(getattr(features, "columns", []))
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["y", "x", *columns])
        for i, (y, x) in enumerate(coords[:, -2:].tolist()):
            writer.writerow([f"{y:.2f}", f"{x:.2f}", *(features[c].iloc[i] for c in columns)])
    return [path]
