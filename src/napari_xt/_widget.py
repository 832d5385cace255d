"""The "xT inference" dock widget: pick an image layer and a model, run, watch labels paint in.

The engine's generator runs in a napari thread worker; every layer change happens on the main
thread in the worker's ``yielded`` callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_xt._layers import label_layer_kwargs
from xt_engine import CancelToken, Finished, Progress, RegionDone, XTError, run_inference
from xt_engine.io import source_from_arrays
from xt_engine.loading import load_model
from xt_engine.models import XTModel, list_models

if TYPE_CHECKING:
    import napari

DEFAULT_MODEL = "xt_demo_sar"
SEGMENTATION_LAYER = "xT segmentation"


class XTInferenceWidget(QWidget):
    """Dock widget. Emits ``run_finished(cancelled)`` when a run ends (used by tests and scripts)."""

    run_finished = Signal(bool)

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker: Any = None
        self._cancel: CancelToken | None = None
        self._model: XTModel | None = None
        self._model_spec: str | None = None
        self._labels: Labels | None = None
        self._last_cancelled = False

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.model_combo.addItems(list_models())
        self.model_combo.setCurrentText(DEFAULT_MODEL)
        self.browse_button = QPushButton("Checkpoint...")
        self.model_summary = QLabel()
        self.model_summary.setWordWrap(True)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(8)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("Ready")
        self.status.setWordWrap(True)

        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", model_row)
        form.addRow("", self.model_summary)
        form.addRow("Batch size", self.batch_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.browse_button.clicked.connect(self._browse_checkpoint)
        self.model_combo.currentTextChanged.connect(self._show_model_summary)
        for event in (
            self.viewer.layers.events.inserted,
            self.viewer.layers.events.removed,
            self.viewer.layers.events.reordered,
        ):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self._show_model_summary(self.model_combo.currentText())

    # -- choices -------------------------------------------------------------------------------
    def _refresh_layers(self, event: object = None) -> None:
        current = self.image_combo.currentText()
        self.image_combo.clear()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "xT checkpoint", "", "Checkpoints (*.safetensors)"
        )
        if path:
            self.model_combo.addItem(path)
            self.model_combo.setCurrentText(path)

    def _show_model_summary(self, spec: str) -> None:
        try:
            model = self._load_model(spec)
        except XTError as err:
            self.model_summary.setText(f"cannot load: {err}")
            return
        cfg = model.config
        params = sum(p.numel() for p in model.parameters())
        self.model_summary.setText(
            f"{cfg.region_encoder.name} -> {cfg.context_encoder.kind}; "
            f"{cfg.head.num_classes} classes; {params / 1e6:.2f} M parameters; "
            f"{cfg.region_encoder.in_chans} channel(s)"
        )

    def _load_model(self, spec: str) -> XTModel:
        if self._model is None or spec != self._model_spec:
            self._model = load_model(spec)
            self._model_spec = spec
        return self._model

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        """Start a run on the chosen image layer (returns at once; results arrive as events)."""
        if self._worker is not None:
            return
        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            show_error("xT: add an image layer first (File > Open, or a sample).")
            return
        layer = self.viewer.layers[name]
        data = layer.data[0] if layer.multiscale else layer.data
        try:
            model = self._load_model(self.model_combo.currentText())
            source = source_from_arrays(data, rgb=layer.rgb, name=layer.name)
            self._cancel = CancelToken()
            events = run_inference(
                source, model, batch_size=self.batch_spin.value(), cancel=self._cancel
            )
            first = next(events)  # validates inputs on the main thread: errors show at once
            self._labels = self._segmentation_layer(layer, source.shape_yx(0), model)
        except XTError as err:
            show_error(f"xT: {err}")
            self.status.setText(str(err))
            return
        self.progress.setRange(0, first.total)
        self.progress.setValue(0)
        self.status.setText(f"Running {first.total} regions...")
        self._set_running(True)
        self._worker = create_worker(lambda: (yield from events), _start_thread=False)
        self._worker.yielded.connect(self._on_event)
        self._worker.errored.connect(self._on_error)
        self._worker.finished.connect(self._on_worker_finished)
        self._worker.start()

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
            self.status.setText("Cancelling after the current batch...")

    def _segmentation_layer(
        self, image: Image, shape_yx: tuple[int, int], model: XTModel
    ) -> Labels:
        """Reuse the segmentation layer when its shape fits, else (re)create it."""
        data = np.zeros(shape_yx, dtype=np.uint8)
        kwargs = label_layer_kwargs(model.config.head)
        scale, translate = image.scale[-2:], image.translate[-2:]
        if SEGMENTATION_LAYER in self.viewer.layers:
            layer = self.viewer.layers[SEGMENTATION_LAYER]
            if isinstance(layer, Labels) and layer.data.shape == shape_yx:
                layer.data = data
                layer.colormap = kwargs["colormap"]
                layer.features = kwargs["features"]
                layer.scale, layer.translate = scale, translate
                return layer
            self.viewer.layers.remove(layer)
        return self.viewer.add_labels(
            data, name=SEGMENTATION_LAYER, opacity=0.6, scale=scale, translate=translate, **kwargs
        )

    def _on_event(self, event: object) -> None:
        labels = self._labels
        if isinstance(event, RegionDone) and labels is not None:
            r = event.region
            labels.data[r.y0 : r.y1, r.x0 : r.x1] = event.labels
        elif isinstance(event, Progress):
            if labels is not None:
                labels.refresh()
            self.progress.setValue(event.done)
            self.status.setText(
                f"{event.done}/{event.total} regions, {event.regions_per_s:.1f} regions/s, "
                f"ETA {event.eta_s:.0f} s"
            )
        elif isinstance(event, Finished):
            verb = "Cancelled" if event.cancelled else "Done"
            self.status.setText(
                f"{verb}: {event.done}/{event.total} regions in {event.seconds:.1f} s"
            )
            self._last_cancelled = event.cancelled

    def _on_error(self, err: Exception) -> None:
        show_error(f"xT: {err}")
        self.status.setText(f"Failed: {err}")
        self._last_cancelled = True

    def _on_worker_finished(self) -> None:
        self._worker = None
        self._set_running(False)
        if self._labels is not None:
            self._labels.refresh()
        self.run_finished.emit(self._last_cancelled)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.model_combo.setEnabled(not running)
        self.browse_button.setEnabled(not running)
