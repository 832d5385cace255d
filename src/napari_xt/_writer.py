"""napari writers: Labels -> OME-Zarr (NGFF 0.5 labels image), Points -> CSV (no Qt).

Labels are copied level by level in row bands, so a lazy whole-slide result is never loaded
whole. Points keep their features (class, score, size) as CSV columns.

Never destroy: the labels writer refuses a path that exists and is not an empty folder, unless
it is a labels image this writer wrote before (marked by the ``napari_xt_writer`` attribute):
a user's folder, a result store of ``xt infer`` or any other zarr store is never replaced. A
napari writer takes no flags, so the refusal is an error naming a new path as the fix.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from xt_engine.errors import InputError
from xt_engine.store.ngff import NGFF_VERSION

BAND_ROWS = 2048
#: the root attribute that marks a labels image as this writer's (it may replace those alone)
WRITER_MARK = "napari_xt_writer"


def _check_target(path: Path) -> None:
    """Refuse to write over anything this writer did not write (see the module docstring)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        if not any(path.iterdir()):
            return
        try:
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        except (OSError, ValueError, AttributeError):
            attrs = {}
        if isinstance(attrs, dict) and attrs.get(WRITER_MARK) == "labels":
            return
    raise InputError(
        f"{path} already exists and was not written by napari-xt's labels writer; "
        "saving there would delete what it holds",
        "save the labels under a new .zarr name (or move the existing one away first)",
    )


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a (multiscale) 2-D Labels layer as an OME-Zarr labels image at ``path``."""
    levels = list(data) if meta.get("multiscale") else [data]
    if len(levels[0].shape) != 2:
        raise ValueError("napari-xt writes 2-D labels only; slice the layer to 2-D first")
    _check_target(Path(path))
    root: Any = zarr.open_group(path, mode="w", zarr_format=3)  # (zarr types attributes JSON)
    root.attrs[WRITER_MARK] = "labels"  # first: an interrupted save may be saved over again
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
        "image-label": {"properties": properties},  # (NGFF 0.5: the version is the ome key's)
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
