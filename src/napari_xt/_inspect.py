"""Click-to-inspect attention: where the clicked region attends across the image.

While the toggle is on, a click on the canvas maps the world position to the last run's grid
(same image, level, ROI and model), computes that region's attention in a worker thread
(:func:`xt_engine.runtime.region_attention.region_attention`) and shows it as an Image layer at
token resolution, aligned with the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QPushButton

from napari_xt._view import labels_placement
from xt_engine import XTError
from xt_engine.io import ImageSource
from xt_engine.models import XTModel
from xt_engine.runtime.region_attention import RegionAttention, region_attention
from xt_engine.tiling import RegionGrid

INSPECT_LAYER = "xT region attention"


@dataclass
class RunContext:
    """What the last run used; a click is answered in the same frame."""

    image: Image
    source: ImageSource
    level: int
    roi: tuple[int, int, int, int] | None
    model: XTModel
    batch_size: int


class AttentionInspector:
    def __init__(self, viewer: Any, status: Any) -> None:
        self.viewer = viewer
        self.status = status
        self.button = QPushButton("Inspect attention (click a region)")
        self.button.setCheckable(True)
        self.button.setEnabled(False)
        self.button.toggled.connect(self._toggle)
        self.context: RunContext | None = None
        self.worker: Any = None

    def set_context(self, context: RunContext) -> None:
        self.context = context
        self.button.setEnabled(True)

    def _toggle(self, on: bool) -> None:
        callbacks = self.viewer.mouse_drag_callbacks
        if on and self._on_click not in callbacks:
            callbacks.append(self._on_click)
        elif not on and self._on_click in callbacks:
            callbacks.remove(self._on_click)

    def _on_click(self, viewer: Any, event: Any) -> None:
        if event.type == "mouse_press":
            self.inspect_at(event.position)

    def region_at(self, world: Any) -> int | None:
        """The last run's region under a world position, or None outside its grid."""
        ctx = self.context
        if ctx is None:
            return None
        full = np.zeros(ctx.image.ndim)
        full[-2:] = np.asarray(world, dtype=float)[-2:]
        y, x = np.asarray(ctx.image.world_to_data(full))[-2:] / np.asarray(
            ctx.source.downsample(ctx.level)
        )
        grid = RegionGrid.for_image(ctx.source.shape_yx(ctx.level), ctx.model.region_size, ctx.roi)
        row = int((y - grid.box[0]) // grid.region_size)
        col = int((x - grid.box[1]) // grid.region_size)
        if not (0 <= row < grid.rows and 0 <= col < grid.cols):
            return None
        return row * grid.cols + col

    def inspect_at(self, world: Any) -> None:
        """Compute and show the attention of the region under ``world`` (in a worker)."""
        ctx = self.context
        index = self.region_at(world)
        if ctx is None or index is None or self.worker is not None:
            return
        self.status.setText(f"Computing the attention of region {index}...")

        def compute() -> RegionAttention:
            return region_attention(
                ctx.source,
                ctx.model,
                index,
                level=ctx.level,
                roi=ctx.roi,
                batch_size=ctx.batch_size,
            )

        self.worker = create_worker(compute, _start_thread=False)
        self.worker.returned.connect(self._show)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._done)
        self.worker.start()

    def _show(self, result: RegionAttention) -> None:
        ctx = self.context
        assert ctx is not None
        down = ctx.source.downsample(ctx.level)
        s = result.token_stride
        scale, translate = labels_placement(ctx.image, (down[0] * s, down[1] * s))
        origin = np.asarray(result.box[:2], dtype=float) * np.asarray(down)
        translate = translate + origin * np.asarray(ctx.image.scale[-2:], dtype=float)
        if INSPECT_LAYER in self.viewer.layers:
            self.viewer.layers.remove(INSPECT_LAYER)
        top = float(result.weights.max()) or 1.0
        self.viewer.add_image(
            result.weights,
            name=INSPECT_LAYER,
            colormap="magma",
            blending="additive",
            opacity=0.7,
            scale=scale,
            translate=translate,
            contrast_limits=(0.0, top),
        )
        self.status.setText(f"Attention of region {result.region_index} (bright: attended)")

    def _failed(self, err: Exception) -> None:
        message = str(err) if isinstance(err, XTError) else f"{type(err).__name__}: {err}"
        show_error(f"xT: {message}")
        self.status.setText(message)

    def _done(self) -> None:
        self.worker = None
