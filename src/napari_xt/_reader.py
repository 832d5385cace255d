"""napari reader for TIFF / OME-TIFF / SVS / OME-Zarr: lazy multiscale layers (no Qt).

Levels stay zarr arrays (or lazy views of them), so level 0 of a whole slide is never loaded;
the pixel size becomes the layer scale. A multichannel image is one layer, the input a model
with that many channels runs on: a 3- or 4-channel uint8 image with channels last is an RGB(A)
layer; any other (a 2-band SAR scene, fluorescence channels) keeps its channels as the first
axis, ``(C, H, W)`` per level, which napari shows as a slider labelled ``c``, with
``metadata["napari_xt"] = {"axes": "cyx", "channel_names": [...]}`` telling the widget which
axis holds the channels (:mod:`napari_xt._inputs`). Every image layer's
``metadata["napari_xt"]["path"]`` is its file (absolute): the widget runs on the engine's own
source of it, so nodata, georeference, pixel size and channel names reach the result store as
``xt infer`` records them. A result store of this tool (what a run of
the widget or ``xt infer`` wrote) opens as its result: the label pyramid as a Labels layer with
the model's classes, or a detection model's points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xt._inputs import LAYER_META, as_dask
from xt_engine.errors import XTError
from xt_engine.io import SLIDE_SUFFIXES, TIFF_SUFFIXES, is_dicom_folder, open_image
from xt_engine.store.safety import read_store_attrs

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Any:
    """The reader function when ``path`` is an image this plugin opens, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    name = str(path).lower().rstrip("/")
    if name.endswith(".zarr") and read_store_attrs(Path(str(path))) is not None:
        return read_result_store
    if name.endswith((*TIFF_SUFFIXES, *SLIDE_SUFFIXES, ".zarr")):
        return read_image
    if Path(str(path)).is_dir() and is_dicom_folder(Path(str(path))):
        return read_image
    return None


def read_result_store(path: str | list[str]) -> list[LayerData]:
    """A result store as its source image (when the file it recorded, ``xt.source_path``, is
    still there) under its segmentation (lazy label pyramid) or detections (points), placed
    over the image (level-0 pixels, or the pixel size the store records)."""
    root = Path(str(path[0] if isinstance(path, list) else path).rstrip("/"))
    return [*_source_layers(root), *_result_layers(root)]


def _source_layers(root: Path) -> list[LayerData]:
    """The image the run read, as read_image gives it; nothing when it is gone, was an
    in-memory array, or no longer opens."""
    xt = read_store_attrs(root) or {}
    source_path = xt.get("source_path")
    if not isinstance(source_path, str) or not Path(source_path).exists():
        return []
    try:
        return read_image(source_path)
    except Exception:  # noqa: BLE001 - the result still opens without its image
        return []


def _result_layers(root: Path) -> list[LayerData]:
    import csv

    import zarr

    from napari_xt._layers import label_layer_kwargs
    from xt_engine.config import XTConfig
    from xt_engine.store.result_store import DETECTIONS_FILE, LABELS_PATH

    xt = read_store_attrs(root)
    if xt is None:
        raise ValueError(f"{root} is not a napari-xt result store")
    try:
        head = XTConfig.from_dict(xt["model_config"]).head
    except XTError as err:
        raise ValueError(str(err)) from err  # napari shows reader errors to the user
    labels: Any = zarr.open_group(str(root), mode="r")[LABELS_PATH]  # (zarr types JSON)
    datasets = labels.attrs["ome"]["multiscales"][0]["datasets"]  # type: ignore[index]
    scale = [float(v) for v in datasets[0]["coordinateTransformations"][0]["scale"]]
    down = [float(d) for d in xt["downsample"]]
    pixel = [s / d for s, d in zip(scale, down, strict=True)]  # level-0 pixel size
    source = xt.get("source") or {}
    # the image layer's units (read_image): a layer without them makes napari drop all units
    units = {"units": source.get("unit") or "pixel"} if source.get("pixel_size") else {}
    state = "" if xt.get("complete") else ", incomplete"
    name = f"xT {root.name}{state}"
    table = root / DETECTIONS_FILE
    if head.task == "detection":
        rows = list(csv.DictReader(table.open(newline=""))) if table.exists() else []
        points = np.array([[float(r["y"]), float(r["x"])] for r in rows]).reshape(-1, 2)
        features = {
            "class": [r["class_name"] for r in rows],
            "score": [float(r["score"]) for r in rows],
        }
        kwargs = {"name": name, "scale": tuple(pixel), "features": features, "size": 12, **units}
        return [(points, kwargs, "points")]
    levels = [labels[d["path"]] for d in datasets]
    translate = tuple((d - 1) / 2 * p for d, p in zip(down, pixel, strict=True))
    meta: dict[str, Any] = {"name": name, "scale": tuple(scale), "translate": translate, **units}
    meta |= {"opacity": 0.6, **label_layer_kwargs(head)}
    if len(levels) > 1:
        meta["multiscale"] = True
    return [(levels if len(levels) > 1 else levels[0], meta, "labels")]


def read_image(path: str | list[str]) -> list[LayerData]:
    """One lazy image layer for ``path`` (RGB(A), or channels first: see the module docstring)."""
    path = path[0] if isinstance(path, list) else path
    try:
        source = open_image(path)
    except XTError as err:
        raise ValueError(str(err)) from err  # napari shows reader errors to the user
    levels = [_lazy(level) for level in source.levels]
    kwargs: dict[str, Any] = {"name": Path(str(path).rstrip("/")).name}
    meta: dict[str, Any] = {"path": str(Path(str(path)).resolve())}  # the widget reopens it
    kwargs["metadata"] = {LAYER_META: meta}
    if len(levels) > 1:
        kwargs["multiscale"] = True
    if source.pixel_size is not None:
        kwargs["scale"] = tuple(source.pixel_size)
        kwargs["units"] = source.unit or "pixel"
    if "c" in source.axes:
        rgb = source.axes == "yxc" and source.num_channels in (3, 4) and source.dtype == np.uint8
        if rgb:
            kwargs["rgb"] = True
        else:
            if source.axes == "yxc":  # napari slides over leading axes: channels first
                levels = [as_dask(level).transpose(2, 0, 1) for level in levels]
            meta |= {"axes": "cyx", "channel_names": source.channel_names}
            kwargs["axis_labels"] = ("c", "y", "x")
            if "units" in kwargs:
                kwargs["units"] = ("pixel", kwargs["units"], kwargs["units"])
    data = levels if len(levels) > 1 else levels[0]
    return [(data, kwargs, "image")]


def _lazy(level: Any) -> Any:
    """zarr arrays go to napari as they are; other lazy views are wrapped in dask."""
    import zarr

    if isinstance(level, zarr.Array):
        return level
    return as_dask(level)
