"""The layers a run paints into: segmentation (Labels) and, when asked, attention (Image).

During a run, regions are painted into in-memory previews on the main thread: the result level,
or a power-of-two downsampling of it of at most ``PREVIEW_MAX_SIDE`` px, because reading the zarr
store on the main thread while the worker writes it stalls the event loop. Large results are
swapped for the store's lazy label pyramid when the run ends, so a whole-slide result never has
to fit in memory. The attention map is one pixel per token (``stride`` level pixels), small.

Every run's store is the user's result: nothing here deletes one (a layer of an earlier run may
still show it). The layers are used as the viewer hands them out (a plugin's viewer wraps them
in napari's ``PublicOnlyProxy``); partial texture updates happen only where napari allows them
(:mod:`napari_xt._napari_private`).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from napari.layers import Image, Labels, Points
from qtpy.QtCore import QTimer

from napari_xt._layers import label_layer_kwargs
from napari_xt._napari_private import mark_painted, redraw
from napari_xt._view import labels_placement, result_units
from xt_engine import RegionDone
from xt_engine.colors import class_colors
from xt_engine.io import ImageSource
from xt_engine.models import XTModel
from xt_engine.store.ngff import ATTENTION_PATH
from xt_engine.store.result_store import DETECTIONS_FILE, LABELS_PATH

SEGMENTATION_LAYER = "xT segmentation"
ATTENTION_LAYER = "xT attention"
DETECTIONS_LAYER = "xT detections"
PREVIEW_MAX_SIDE = 4096
REFRESH_S = 0.2


def warm_up_layers() -> None:
    """Pay napari's lazy first-use costs of a Labels layer (pandas import for layer features,
    ~0.5 s) now, when the widget opens, instead of on the first Run click."""
    import pandas  # noqa: F401

    Labels(np.zeros((2, 2), dtype=np.uint8))


class RunLayers:
    """Creates, paints and swaps the result layers of one run after another."""

    def __init__(self, viewer: Any) -> None:
        QTimer.singleShot(0, warm_up_layers)
        self.viewer = viewer
        self.labels: Labels | None = None
        self._labels_id: object = None  # unique_id of the segmentation layer made here
        self.attention: Image | None = None
        self._heat: np.ndarray | None = None  # (H / stride, W / stride) float32 being painted
        self._pending_attention: dict[str, Any] | None = None  # its layer's placement, to add
        self.points: Points | None = None
        self._detections: list[np.ndarray] = []
        self._class_names: list[str] = []
        self._class_rgba = np.zeros((0, 4), dtype=np.float32)
        self.store: Path | None = None
        self._dirty = False
        self._refreshed = 0.0  # perf_counter of the last redraw (0: none yet in this run)
        self._partial = True  # partial texture updates work in this napari (see mark_painted)
        self._factor = 1
        self._run: tuple[Image, tuple[float, float], XTModel] | None = None
        self._reveal: Labels | None = None  # a new segmentation layer, hidden until painted

    def start(
        self,
        image: Image,
        source: ImageSource,
        level: int,
        store: Path,
        model: XTModel,
        attention: bool,
        resume: bool = False,
    ) -> list[Callable[[], object]]:
        """Fresh preview layers for a run writing to ``store`` (earlier stores stay as they
        are); ``resume``: the store's finished regions are read into them first. A new
        segmentation layer is inserted now (napari: one ~80-100 ms turn on this CPU); returns
        the steps still to do (adding the attention layer), for the caller to run one per turn
        of the event loop (:func:`napari_xt._threads.run_in_turns`)."""
        steps: list[Callable[[], object]] = []
        shape = source.shape_yx(level)
        down = source.downsample(level)
        factor = 1
        while max(shape) / factor > PREVIEW_MAX_SIDE:
            factor *= 2
        self._factor, self._run = factor, (image, down, model)
        units = result_units(image)  # the image's (a layer without them: napari drops all units)
        self._dirty, self._refreshed, self._partial = False, 0.0, True
        self._reveal = None
        for name in (ATTENTION_LAYER, DETECTIONS_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.attention, self.points, self._detections = None, None, []
        if model.config.head.task == "detection":
            self.labels = None  # a segmentation layer of an earlier run stays as it is
            self._start_points(image, down, model)
        elif model.config.head.task == "classification":
            self.labels = None  # one class for the image: shown in the status line
        else:
            preview = np.zeros((-(-shape[0] // factor), -(-shape[1] // factor)), dtype=np.uint8)
            scale, translate = labels_placement(image, (down[0] * factor, down[1] * factor))
            self._replace_labels(
                Labels(
                    preview,
                    name=SEGMENTATION_LAYER,
                    opacity=0.6,
                    visible=False,  # shown with the first results: its first draw is a later turn
                    scale=scale,
                    translate=translate,
                    **units,
                    **label_layer_kwargs(model.config.head),
                )
            )
        self._heat, self._pending_attention = None, None
        if attention:
            stride = model.region_size // model.token_grid[0]
            heat = np.zeros((-(-shape[0] // stride), -(-shape[1] // stride)), dtype=np.float32)
            scale, translate = labels_placement(image, (down[0] * stride, down[1] * stride))
            self._heat = heat  # painted from now on; the layer shows this very array
            self._pending_attention = {"scale": scale, "translate": translate, **units}
            steps.append(self._add_attention)
        self.store = store
        if resume:
            self._fill_from_store(store)
        return steps

    def _fill_from_store(self, store: Path) -> None:
        """A resumed run: what the store already holds (the engine does not send its finished
        regions again) goes into the previews. Read here, before the worker writes again (it
        waits for the layers)."""
        group: Any = zarr.open_group(str(store), mode="r")  # (zarr types its attributes JSON)
        xt = dict(group.attrs["xt"])
        if self.labels is not None:
            preview, f = self.labels.data, self._factor
            k = f.bit_length() - 1  # level k of the pyramid: level 0 subsampled by 2^k (nearest)
            if k < int(xt.get("label_levels", 1)):
                level_k = group[f"{LABELS_PATH}/{k}"]
                block = np.asarray(level_k[: preview.shape[0], : preview.shape[1]])
            else:
                block = np.asarray(group[f"{LABELS_PATH}/0"][::f, ::f])
            preview[: block.shape[0], : block.shape[1]] = block
            self._dirty = True
        if self._heat is not None and ATTENTION_PATH in group:
            h, w = self._heat.shape
            block = np.asarray(group[f"{ATTENTION_PATH}/0"][:h, :w], dtype=np.float32)
            self._heat[: block.shape[0], : block.shape[1]] = block
        table = store / DETECTIONS_FILE
        if self.points is not None and table.exists():
            dy, dx = (float(d) for d in xt["downsample"])  # the table is in level-0 pixels
            with table.open(newline="") as handle:
                rows = [
                    [float(r["y"]) / dy, float(r["x"]) / dx, int(r["class"]), float(r["score"])]
                    + [float(r["height"]) / dy, float(r["width"]) / dx]
                    for r in csv.DictReader(handle)
                ]
            if rows:
                self._detections.append(np.asarray(rows, dtype=np.float64))
                self._dirty = True

    def _add_attention(self) -> None:
        """The attention layer of the current run, over the array being painted (once)."""
        if self._pending_attention is None or self._heat is None:
            return
        placement, self._pending_attention = self._pending_attention, None
        self.attention = self.viewer.add_image(
            self._heat,
            name=ATTENTION_LAYER,
            colormap="inferno",
            opacity=0.5,
            blending="additive",
            contrast_limits=(0.0, 1.0),
            **placement,
        )

    def _start_points(self, image: Image, down: tuple[float, float], model: XTModel) -> None:
        """An empty Points layer for detections, one face colour per class."""
        colors = np.asarray(class_colors(model.config.head), dtype=np.float32) / 255.0
        colors[:, 3] = 1.0
        self._class_names = list(model.config.head.names())
        self._class_rgba = colors
        scale, translate = labels_placement(image, down)
        self.points = self.viewer.add_points(
            np.zeros((0, 2)),
            name=DETECTIONS_LAYER,
            scale=scale,
            translate=translate,
            **result_units(image),
            size=12,
            border_width=0.1,
            border_color="white",
            face_color="transparent",
        )

    def paint(self, event: RegionDone) -> None:
        """Copy one region's results into the previews (no redraw; see :meth:`refresh`)."""
        self._dirty = True
        if event.detections is not None and len(event.detections):
            self._detections.append(event.detections)
        if self.labels is None or event.labels is None:
            return
        f, r = self._factor, event.region
        sub = event.labels[(-r.y0) % f :: f, (-r.x0) % f :: f]
        y0, x0 = -(-r.y0 // f), -(-r.x0 // f)
        target = self.labels.data[y0 : y0 + sub.shape[0], x0 : x0 + sub.shape[1]]
        target[...] = sub[: target.shape[0], : target.shape[1]]
        h, w = target.shape
        if self._reveal is None:  # (a hidden layer is not sliced; showing it redraws it all)
            self._partial = self._partial and mark_painted(self.labels, y0, y0 + h, x0, x0 + w)
        if self._heat is not None and event.attention is not None:
            s, heat = event.token_stride, self._heat
            ay, ax = r.y0 // s, r.x0 // s
            block = heat[ay : ay + event.attention.shape[0], ax : ax + event.attention.shape[1]]
            block[...] = event.attention[: block.shape[0], : block.shape[1]]

    def refresh(self, force: bool = False) -> bool:
        """Redraw what was painted since the last redraw: at once after the first paint, then
        at most every ``REFRESH_S`` (only the painted blocks are uploaded, see mark_painted; a
        pass without paint, the first of two passes, redraws nothing). ``force`` (the end of a
        run) redraws everything and shows a layer still hidden. Returns whether it redrew."""
        now = time.perf_counter()
        if not force and (not self._dirty or now - self._refreshed < REFRESH_S):
            return False
        self._dirty, self._refreshed = False, now
        if self.points is not None and self._detections:
            rows = np.concatenate(self._detections)  # (M, 6): y, x, class, score, h, w
            classes = rows[:, 2].astype(int)
            self.points.data = rows[:, :2]
            self.points.features = {
                "class": [self._class_names[c] for c in classes],
                "score": rows[:, 3],
                "height": rows[:, 4],
                "width": rows[:, 5],
            }
            self.points.face_color = self._class_rgba[classes]
            self.points.size = np.maximum(rows[:, 4:6].max(axis=1), 4.0)
        if self._reveal is not None:
            # a new layer is inserted hidden (napari's insert costs ~75 ms on the event loop, its
            # first draw ~50 ms more: one turn each) and shown with the first results
            self._reveal.visible = True
            self._reveal = None
        elif self.labels is not None and not force:
            redraw(self.labels, partial=self._partial)  # only the painted blocks, if napari lets us
        elif self.labels is not None:
            self.labels.refresh()
        if self.attention is not None:
            top = float(self.attention.data.max())
            self.attention.contrast_limits = (0.0, top if top > 0 else 1.0)
            self.attention.refresh()
        return True

    def finish(self) -> None:
        """After the run: large results switch to the store's lazy label pyramid."""
        self._add_attention()  # a run shorter than one turn of the event loop
        if self._factor == 1 or self.store is None or self._run is None or self.labels is None:
            self.refresh(force=True)
            return
        image, down, model = self._run
        group: Any = zarr.open_group(str(self.store), mode="r")
        data = [group[f"{LABELS_PATH}/{k}"] for k in range(group.attrs["xt"]["label_levels"])]
        scale, translate = labels_placement(image, down)
        self._replace_labels(
            Labels(
                data,
                multiscale=len(data) > 1,
                name=SEGMENTATION_LAYER,
                opacity=0.6,
                scale=scale,
                translate=translate,
                **result_units(image),
                **label_layer_kwargs(model.config.head),
            )
        )

    def _replace_labels(self, layer: Labels) -> None:
        """Show ``layer`` as the segmentation layer. An existing single-scale one is updated in
        place (removing a layer makes napari run a full garbage collection and rebuild the
        visual: ~0.5 s on the main thread); a multiscale one is replaced."""
        old = (
            self.viewer.layers[SEGMENTATION_LAYER]
            if SEGMENTATION_LAYER in self.viewer.layers
            else None
        )
        # reuse only the layer made here (as the viewer hands it out: a plugin's viewer wraps
        # layers in napari's PublicOnlyProxy); a layer of the same name made elsewhere is replaced
        if (
            old is not None
            and self._labels_id is not None
            and old.unique_id == self._labels_id
            and not old.multiscale
            and not layer.multiscale
        ):
            if old.data.shape == layer.data.shape and old.data.dtype == layer.data.dtype:
                old.data[...] = layer.data  # a re-run: no new texture, only its contents
                old.refresh()
            else:
                old.data = layer.data
            if not (
                np.allclose(old.scale, layer.scale) and np.allclose(old.translate, layer.translate)
            ):
                old.scale, old.translate = layer.scale, layer.translate
            if old.units != layer.units:  # a run over an image in other units
                old.units = layer.units
            if _legend(old) != _legend(layer):  # another model's classes
                old.colormap = layer.colormap
                old.features = layer.features
            self.labels = old
            return
        index = len(self.viewer.layers)
        if old is not None:
            index = self.viewer.layers.index(old)
            self.viewer.layers.remove(old)
        self.viewer.layers.insert(index, layer)
        self.labels = self.viewer.layers[index]  # the viewer's handle on it (maybe a proxy)
        self._labels_id = self.labels.unique_id
        if not layer.visible:
            self._reveal = self.labels


def _legend(layer: Labels) -> tuple[str, str]:
    """A Labels layer's class names and colours, comparable between layers."""
    names = list(layer.features["class"]) if "class" in layer.features else []
    return repr(names), repr(getattr(layer.colormap, "color_dict", None))
