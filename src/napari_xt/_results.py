"""The layers a run paints into: segmentation (Labels) and, when asked, attention (Image).

During a run, regions are painted into in-memory previews on the main thread: the result level,
or a power-of-two downsampling of it of at most ``PREVIEW_MAX_SIDE`` px, because reading the zarr
store on the main thread while the worker writes it stalls the event loop. Large results are
swapped for the store's lazy label pyramid when the run ends, so a whole-slide result never has
to fit in memory. The attention map is one pixel per token (``stride`` level pixels), small.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from napari.layers import Image, Labels

from napari_xt._layers import label_layer_kwargs
from napari_xt._view import labels_placement
from xt_engine import RegionDone
from xt_engine.io import ImageSource
from xt_engine.models import XTModel
from xt_engine.outputs import LABELS_PATH

SEGMENTATION_LAYER = "xT segmentation"
ATTENTION_LAYER = "xT attention"
PREVIEW_MAX_SIDE = 4096


class RunLayers:
    """Creates, paints and swaps the result layers of one run after another."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.labels: Labels | None = None
        self.attention: Image | None = None
        self.store: Path | None = None
        self._factor = 1
        self._run: tuple[Image, tuple[float, float], XTModel] | None = None

    def start(
        self,
        image: Image,
        source: ImageSource,
        level: int,
        store: Path,
        model: XTModel,
        attention: bool,
    ) -> None:
        """Fresh preview layers for a run writing to ``store``; the previous store is removed."""
        shape = source.shape_yx(level)
        down = source.downsample(level)
        factor = 1
        while max(shape) / factor > PREVIEW_MAX_SIDE:
            factor *= 2
        self._factor, self._run = factor, (image, down, model)
        preview = np.zeros((-(-shape[0] // factor), -(-shape[1] // factor)), dtype=np.uint8)
        scale, translate = labels_placement(image, (down[0] * factor, down[1] * factor))
        self._replace_labels(
            Labels(
                preview,
                name=SEGMENTATION_LAYER,
                opacity=0.6,
                scale=scale,
                translate=translate,
                **label_layer_kwargs(model.config.head),
            )
        )
        if ATTENTION_LAYER in self.viewer.layers:
            self.viewer.layers.remove(ATTENTION_LAYER)
        self.attention = None
        if attention:
            stride = model.region_size // model.token_grid[0]
            heat = np.zeros((-(-shape[0] // stride), -(-shape[1] // stride)), dtype=np.float32)
            scale, translate = labels_placement(image, (down[0] * stride, down[1] * stride))
            self.attention = self.viewer.add_image(
                heat,
                name=ATTENTION_LAYER,
                colormap="inferno",
                opacity=0.5,
                blending="additive",
                scale=scale,
                translate=translate,
                contrast_limits=(0.0, 1.0),
            )
        previous, self.store = self.store, store
        if previous is not None and previous != store:
            shutil.rmtree(previous, ignore_errors=True)

    def paint(self, event: RegionDone) -> None:
        """Copy one region's results into the previews (no redraw; see :meth:`refresh`)."""
        if self.labels is None:
            return
        f, r = self._factor, event.region
        sub = event.labels[(-r.y0) % f :: f, (-r.x0) % f :: f]
        y0, x0 = -(-r.y0 // f), -(-r.x0 // f)
        target = self.labels.data[y0 : y0 + sub.shape[0], x0 : x0 + sub.shape[1]]
        target[...] = sub[: target.shape[0], : target.shape[1]]
        if self.attention is not None and event.attention is not None:
            s, heat = event.token_stride, self.attention.data
            ay, ax = r.y0 // s, r.x0 // s
            block = heat[ay : ay + event.attention.shape[0], ax : ax + event.attention.shape[1]]
            block[...] = event.attention[: block.shape[0], : block.shape[1]]

    def refresh(self) -> None:
        if self.labels is not None:
            self.labels.refresh()
        if self.attention is not None:
            top = float(self.attention.data.max())
            self.attention.contrast_limits = (0.0, top if top > 0 else 1.0)
            self.attention.refresh()

    def finish(self) -> None:
        """After the run: large results switch to the store's lazy label pyramid."""
        if self._factor == 1 or self.store is None or self._run is None:
            self.refresh()
            return
        image, down, model = self._run
        group = zarr.open_group(str(self.store), mode="r")
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
                **label_layer_kwargs(model.config.head),
            )
        )

    def _replace_labels(self, layer: Labels) -> None:
        if SEGMENTATION_LAYER in self.viewer.layers:
            old = self.viewer.layers[SEGMENTATION_LAYER]
            index = self.viewer.layers.index(old)
            self.viewer.layers.remove(old)
        else:
            index = len(self.viewer.layers)
        self.labels = layer
        self.viewer.layers.insert(index, layer)
