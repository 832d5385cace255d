"""Click-to-inspect attention: where the clicked region attends across the image.

While the toggle is on, a click on the canvas maps the world position to the last run's grid
(same image, level, ROI, overlap and model), computes that region's attention in a worker thread
on the run's device (:func:`xt_engine.runtime.region_attention.region_attention`) and shows it
as an Image layer at token resolution, aligned with the image. The toggle is off and disabled
while a run goes: the run and the inspection share the model (the inspection could move it to
another device, and two computations would compete for the cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QPushButton

from napari_xt._view import labels_placement, result_units
from xt_engine import XTError
from xt_engine.io import ImageSource
from xt_engine.models import XTModel
from xt_engine.runtime.region_attention import RegionAttention, region_attention
from xt_engine.tiling import RegionGrid

INSPECT_LAYER = "xT region attention"


@dataclass
class RunContext:
    """What a run used (a click is answered in the same frame; Resume repeats it)."""

    image: Image
    source: ImageSource
    level: int
    roi: tuple[int, int, int, int] | None
    model: XTModel
    batch_size: int
    overlap: int = 0
    device: str = "cpu"
    attention: bool = False
    precision: str = "auto"
    store: Path | None = None
    foreground: object = "auto"  # a method name or a _foreground.MaskPlan (made in the worker)

    def grid(self) -> RegionGrid:
        """The run's region grid (its overlap included)."""
        shape = self.source.shape_yx(self.level)
        return RegionGrid.for_image(shape, self.model.region_size, self.roi, self.overlap)


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
        self.running = False  # a run is in progress: no inspection

    @property
    def busy(self) -> bool:
        """An inspection is being computed."""
        return self.worker is not None

    def set_context(self, context: RunContext) -> None:
        self.context = context
        self.button.setEnabled(not self.running)

    def set_running(self, running: bool) -> None:
        """Off and disabled while a run goes; enabled after it when there is a run to inspect."""
        self.running = running
        if running:
            self.button.setChecked(False)
        self.button.setEnabled(not running and self.context is not None)

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
        grid = ctx.grid()  # regions output tiles ``step`` px apart from the box's corner
        row = int((y - grid.box[0]) // grid.step)
        col = int((x - grid.box[1]) // grid.step)
        if y >= grid.box[2] or x >= grid.box[3]:
            return None
        if not (0 <= row < grid.rows and 0 <= col < grid.cols):
            return None
        return row * grid.cols + col

    def inspect_at(self, world: Any) -> None:
        """Compute and show the attention of the region under ``world`` (in a worker)."""
        ctx = self.context
        index = self.region_at(world)
        if ctx is None or index is None or self.worker is not None or self.running:
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
                device=ctx.device,
                overlap=ctx.overlap,
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
        corner = np.asarray(result.box[:2], dtype=float) - result.margin  # the first token's
        origin = corner * np.asarray(down)
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
            **result_units(ctx.image),
            contrast_limits=(0.0, top),
        )
        self.status.setText(f"Attention of region {result.region_index} (bright: attended)")

    def _failed(self, err: Exception) -> None:
        message = str(err) if isinstance(err, XTError) else f"{type(err).__name__}: {err}"
        show_error(f"xT: {message}")
        self.status.setText(message)

    def _done(self) -> None:
        self.worker = None
