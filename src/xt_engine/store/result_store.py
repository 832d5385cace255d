"""The result store: an OME-Zarr (NGFF 0.5, zarr v3) directory written region by region.

Layout::

    OUT.zarr/                      root group; attrs: ome.version, xt (provenance)
      labels/                      NGFF labels group; attrs: ome.version, ome.labels
        segmentation/0..K          NGFF image-label: label pyramid (level 0 = the inference
                                   level), uint8; attrs ome.multiscales, ome.image-label
      attention/0                  optional NGFF image: per-token attention, float16, one
                                   pixel per token
      probabilities/0              optional NGFF image: class probabilities (c, y, x), float16
      detections.csv               detection models: region, y, x, class, class_name, score,
                                   height, width (centres and sizes in level-0 pixels)
      xt_done                      bool per region: written regions (resume record)
      xt_foreground                bool per region, False where a foreground run skipped it

NGFF 0.5: the root holds no image (``ome`` has only ``version``). NGFF places a ``labels``
group inside the image it labels, but copying the source image (a whole slide) into every
result would cost its size again, so the root is a plain group, and its members are each valid
NGFF 0.5 on their own: ``labels`` validates as ome-zarr-models' ``Labels``,
``labels/segmentation`` as ``ImageLabel``, ``attention`` and ``probabilities`` as ``Image``
(tests/xt_engine/test_result_store_ngff.py; ome-zarr-py and napari-ome-zarr open
``OUT.zarr/labels``, tests/napari_xt/test_third_party_readers.py; the root shows nothing there).
The image the labels belong to is named in ``xt.source_path``. Stores written before this
layout carry ``ome.labels`` on the root instead of on ``labels``: this tool reads both (it
reads the label arrays by path, never through ``ome.labels``).

The root attribute ``xt.complete`` turns true only after every region is written, so an
interrupted run never looks finished. Every pyramid level is chunked ``T x T`` for output tiles
of ``T`` px (``R``, or ``R - 2 overlap``): each region fills one level-0 chunk, and the coarser
levels are built from the finer ones as their chunks' regions complete
(:mod:`xt_engine.store.pyramid`), so the pyramid needs no second pass.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from xt_engine.colors import class_colors
from xt_engine.config import XTConfig
from xt_engine.errors import InputError
from xt_engine.io.source import ImageSource
from xt_engine.store.chunk_files import ChunkFiles
from xt_engine.store.detections import DETECTIONS_FILE, append_detections, drop_unfinished_rows
from xt_engine.store.ngff import (
    ATTENTION_PATH,
    NGFF_VERSION,
    PROBABILITIES_PATH,
    create_attention,
    create_probabilities,
    space_axes,
)
from xt_engine.store.provenance import check_determinants, provenance, xt_attrs
from xt_engine.store.pyramid import LabelPyramid
from xt_engine.tiling import Region, RegionGrid

LABELS_GROUP = "labels"
LABEL_NAME = "segmentation"
LABELS_PATH = f"{LABELS_GROUP}/{LABEL_NAME}"
FOREGROUND_PATH = "xt_foreground"


def _pyramid_depth(shape_yx: tuple[int, int]) -> int:
    """Level 0 and every level k >= 1 whose long side keeps >= 256 px."""
    depth = 1
    while max(shape_yx) >> depth >= 256:
        depth += 1
    return depth


Maybe = np.ndarray | None
BatchItem = tuple[Region, Maybe, Maybe, Maybe, Maybe]


class OutputStore:
    def __init__(self, path: Path, root: zarr.Group, grid: RegionGrid) -> None:
        self.path = path
        self.root = root
        self.grid = grid
        xt = xt_attrs(root)
        self.labels = [_array(root, f"{LABELS_PATH}/{k}") for k in range(xt["label_levels"])]
        # read once here, not per region: the detections table scales and names its rows
        self._downsample = (float(xt["downsample"][0]), float(xt["downsample"][1]))
        self._class_names = list(xt["model_config"]["head"].get("class_names") or [])
        self.done = _array(root, "xt_done")
        self._done_flags = np.asarray(self.done[:], dtype=bool)  # the record, held here too
        self.pyramid = LabelPyramid(self.labels, grid, self._done_flags)  # (copies it)
        # the hot path: whole chunks as files (None -> zarr slicing; see xt_engine.store.chunk_files)
        self._label_files = ChunkFiles.of(self.labels[0])
        self._done_files = ChunkFiles.of(self.done)
        self.attention = _array(root, f"{ATTENTION_PATH}/0") if ATTENTION_PATH in root else None
        self.attention_stride = int(xt.get("attention_stride", 0))
        self.probabilities = (
            _array(root, f"{PROBABILITIES_PATH}/0") if PROBABILITIES_PATH in root else None
        )

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        source: ImageSource,
        level: int,
        grid: RegionGrid,
        config: XTConfig,
        token_stride: int = 0,
        probabilities: bool = False,
        determinants: dict[str, Any] | None = None,
    ) -> OutputStore:
        """A fresh store at ``path``, which must be new, empty or hold nothing but this tool's
        lock (the caller checks and clears it: :mod:`xt_engine.store.safety`);
        ``token_stride`` adds an attention image, ``probabilities`` a float16 (K, y, x) class
        probability image; ``determinants`` (see
        :func:`xt_engine.runtime.inference.run_determinants`) go into the provenance, and a
        resume must match them."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            root = zarr.create_group(store=str(path), zarr_format=3)
        except (OSError, FileExistsError, ValueError) as err:
            raise InputError(
                f"cannot write to {path} ({getattr(err, 'strerror', None) or err})",
                "choose a writable, new output path",
            ) from err
        shape = source.shape_yx(level)
        r = grid.step  # one chunk per region's output tile
        depth = _pyramid_depth(shape)
        down = source.downsample(level)
        pixel = source.pixel_size or (1.0, 1.0)
        datasets = []
        for k in range(depth):
            factor = 2**k
            root.create_array(
                f"{LABELS_PATH}/{k}",
                shape=(-(-shape[0] // factor), -(-shape[1] // factor)),
                chunks=(r, r),
                dtype="uint8",
                fill_value=0,
                dimension_names=("y", "x"),
            )
            scale = [pixel[0] * down[0] * factor, pixel[1] * down[1] * factor]
            datasets.append(
                {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            )
        root.create_array(
            "xt_done",
            shape=(len(grid),),
            chunks=(min(len(grid), 4096),),
            dtype="bool",
            fill_value=False,
        )
        axes = space_axes(source.unit if source.pixel_size else None)
        names = config.head.names()
        colors = class_colors(config.head)
        labels_ome: dict[str, Any] = {
            "version": NGFF_VERSION,
            "multiscales": [{"name": "segmentation", "axes": axes, "datasets": datasets}],
            "image-label": {  # (NGFF 0.5: the version is the ome key's alone)
                "colors": [{"label-value": i, "rgba": colors[i]} for i in range(len(names))],
                "properties": [{"label-value": i, "class": n} for i, n in enumerate(names)],
            },
        }
        root[LABELS_PATH].attrs["ome"] = labels_ome
        root[LABELS_GROUP].attrs["ome"] = {"version": NGFF_VERSION, "labels": [LABEL_NAME]}
        if token_stride:
            create_attention(root, shape, token_stride, r, pixel, down, axes)
        if probabilities:
            create_probabilities(root, shape, len(names), r, pixel, down, axes)
        root.attrs["ome"] = {"version": NGFF_VERSION}  # a plain group: see the module docstring
        root.attrs["xt"] = provenance(source, level, grid, config, depth) | {
            "attention_stride": token_stride,
            "determinants": dict(determinants or {}),
        }
        return cls(path, root, grid)

    @classmethod
    def resume(
        cls,
        path: Path,
        *,
        source: ImageSource,
        level: int,
        grid: RegionGrid,
        config: XTConfig,
        determinants: dict[str, Any] | None = None,
    ) -> OutputStore:
        """Reopen an interrupted store of the same run: same image, level, ROI, model config
        and ``determinants`` (what decides the result: context chunking, input scaling,
        padding, the weights' hash); a difference is an InputError naming the field."""
        try:
            root = zarr.open_group(str(path), mode="r+")
            xt = xt_attrs(root)
        except (FileNotFoundError, KeyError, ValueError) as err:
            raise InputError(
                f"{path} is not a napari-xt result store to resume",
                "run without --resume to start a new one",
            ) from err
        fresh = provenance(source, level, grid, config, xt.get("label_levels", 0))
        for key in (
            "source",
            "level",
            "roi",
            "region_size",
            "overlap",
            "num_regions",
            "determinants",  # checked field by field, before the whole model config
            "model_config",
        ):
            if key == "determinants":
                check_determinants(path, xt.get("determinants") or {}, determinants or {})
                continue
            recorded = xt.get(key, 0 if key == "overlap" else None)  # stores before overlap
            if recorded != json.loads(json.dumps(fresh[key])):  # attrs hold JSON
                raise InputError(
                    f"{path} was written by another run ({key} differs)",
                    "resume with the same image, --level, --roi and model, or write a new --out",
                )
        try:
            store = cls(path, root, grid)
        except KeyError as err:
            raise InputError(f"{path} is damaged ({err})", "write a new --out") from err
        store.drop_detections_of_unfinished_regions()
        store.pyramid.catch_up()
        return store

    def done_regions(self) -> set[int]:
        """Indices of the regions already written."""
        return {int(i) for i in np.flatnonzero(self.done[:])}

    def write_region(
        self,
        region: Region,
        labels: np.ndarray | None,
        attention: np.ndarray | None = None,
        detections: np.ndarray | None = None,
    ) -> None:
        """Write a region's labels (h, w) to every pyramid level, its attention map at token
        resolution when the store has one, and its detections (rows in the level's pixels) to
        ``detections.csv`` in level-0 pixels; then record the region as done."""
        self.write_batch([(region, labels, attention, detections, None)])

    def write_batch(self, items: list[BatchItem]) -> None:
        """Write several regions ``(region, labels, attention, detections, probabilities)`` at
        once (probabilities (K, h, w) float16, when the store has them): each region's labels
        go to level 0 as its chunk file (off the chunk grid: neighbours in a row joined into one
        strip, one zarr write each), the pyramid builds the coarse chunks they complete, and
        the done flags are written last."""
        strips: list[list[tuple[Region, np.ndarray]]] = []
        direct: list[Region] = []  # labels written as whole level-0 chunks
        for region, labels, attention, detections, probabilities in items:
            if detections is not None:
                self._append_detections(region, detections)
            if probabilities is not None and self.probabilities is not None:
                h, w = probabilities.shape[1:]
                self.probabilities[:, region.y0 : region.y0 + h, region.x0 : region.x0 + w] = (
                    probabilities
                )
            if attention is not None and self.attention is not None:
                self._write_attention(region, attention)
            if labels is None:
                continue
            if self._write_label_chunk(region, labels):
                direct.append(region)
                continue
            last = strips[-1][-1][0] if strips else None
            if (
                last is not None
                and last.y0 == region.y0
                and last.height == region.height
                and last.x1 == region.x0
            ):
                strips[-1].append((region, labels))
            else:
                strips.append([(region, labels)])
        for strip in strips:
            first = strip[0][0]
            labels = np.concatenate([lab for _, lab in strip], axis=1)
            h, w = labels.shape
            self.labels[0][first.y0 : first.y0 + h, first.x0 : first.x0 + w] = labels
        if strips or direct:
            self.pyramid.update([*direct, *(region for strip in strips for region, _ in strip)])
        self._mark_done(sorted(region.index for region, *_ in items))

    def _write_label_chunk(self, region: Region, labels: np.ndarray) -> bool:
        """Write a region's labels as its level-0 chunk file when its tile is exactly one chunk's
        origin (always, without a ROI off the chunk grid); False: the caller uses zarr."""
        files = self._label_files
        if files is None:
            return False
        ty, tx = files.chunk_shape
        if region.y0 % ty or region.x0 % tx or labels.shape[0] > ty or labels.shape[1] > tx:
            return False
        files.write((region.y0 // ty, region.x0 // tx), labels)
        return True

    def mark_skipped(self, indices: list[int]) -> None:
        """Record regions a foreground run leaves out: background labels (the fill value), done,
        and False in ``xt_foreground`` (bool per region, written only when some are skipped)."""
        if not indices:
            return
        ran = np.ones(len(self.grid), dtype=np.bool_)
        ran[indices] = False
        self.root.create_array(FOREGROUND_PATH, data=ran, chunks=(max(len(ran), 1),))
        self.pyramid.update([self.grid.region(i) for i in indices])
        self._mark_done(sorted(indices))

    def _mark_done(self, indices: list[int]) -> None:
        """Record regions as written: whole chunks of the flags from the copy held here, or one
        zarr write per contiguous run of indices."""
        if not indices:
            return
        self._done_flags[indices] = True
        if self._done_files is not None:
            (size,) = self._done_files.chunk_shape
            for c in sorted({i // size for i in indices}):
                self._done_files.write((c,), self._done_flags[c * size : (c + 1) * size])
            return
        start = 0
        for i in range(1, len(indices) + 1):
            if i == len(indices) or indices[i] != indices[i - 1] + 1:
                self.done[indices[start] : indices[i - 1] + 1] = True
                start = i

    def _write_attention(self, region: Region, attention: np.ndarray) -> None:
        s = self.attention_stride
        ay, ax = region.y0 // s, region.x0 // s
        assert self.attention is not None
        self.attention[ay : ay + attention.shape[0], ax : ax + attention.shape[1]] = attention

    def _append_detections(self, region: Region, rows: np.ndarray) -> None:
        append_detections(
            self.path / DETECTIONS_FILE, region, rows, self._downsample, self._class_names
        )

    def drop_detections_of_unfinished_regions(self) -> None:
        """On resume: drop the rows of regions not recorded as done (and a torn last row)."""
        drop_unfinished_rows(self.path / DETECTIONS_FILE, self.done_regions())

    def write_classification(self, probabilities: tuple[float, ...]) -> None:
        """The image-level result of a classification model, in the ``xt`` attributes."""
        xt = xt_attrs(self.root)
        names = xt["model_config"]["head"].get("class_names") or []
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        xt["classification"] = {
            "class": best,
            "class_name": names[best] if best < len(names) else f"class_{best}",
            "probabilities": list(probabilities),
        }
        self.root.attrs["xt"] = xt

    def mark_complete(
        self, missing_pixels: int | None = None, report: dict[str, Any] | None = None
    ) -> None:
        """Set ``xt.complete``, last and atomically: the root's ``zarr.json`` (zarr v3 group
        metadata) is rewritten as a temporary file, synced and renamed over the old one, so a
        kill at any moment leaves either the incomplete store or the complete one.
        ``missing_pixels``: output pixels labelled background because their input had no data
        (NaN, nodata), recorded as ``xt.missing_pixels`` (a resumed run counts its own part);
        ``report``: the per-image report (:mod:`xt_engine.export.report`), as ``xt.report``."""
        xt = xt_attrs(self.root)
        xt["complete"] = True
        if missing_pixels is not None:
            xt["missing_pixels"] = int(xt.get("missing_pixels", 0)) + missing_pixels
        if report is not None:
            xt["report"] = report | {"missing_pixels": xt.get("missing_pixels", 0)}
        xt["finished"] = datetime.now(UTC).isoformat()
        meta_path = self.path / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta.setdefault("attributes", {})["xt"] = xt
        tmp = meta_path.with_name("zarr.json.partial")
        with tmp.open("w") as handle:
            json.dump(meta, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, meta_path)
        self.root = zarr.open_group(str(self.path), mode="r+")

    @property
    def complete(self) -> bool:
        return bool(xt_attrs(self.root).get("complete", False))


def _array(root: zarr.Group, path: str) -> zarr.Array:
    node = root[path]
    if not isinstance(node, zarr.Array):
        raise KeyError(f"{path} is not an array")  # resume turns it into "is damaged"
    return node
