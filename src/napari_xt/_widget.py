"""The "xT inference" dock widget: pick an image layer and a model, run, watch labels paint in.

The engine's generator runs in a napari thread worker and writes an OME-Zarr result store; the
segmentation layer reads that store lazily as a multiscale Labels layer and is refreshed on the
main thread in the worker's ``yielded`` callback, so memory stays bounded for whole slides.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from napari.layers import Image, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_xt._controls import button, combo, hbox, model_combo, spin
from napari_xt._inspect import AttentionInspector, RunContext
from napari_xt._models import ModelChoice
from napari_xt._results import RunLayers
from napari_xt._threads import engine_events, run_in_turns
from napari_xt._view import SCOPES, SHAPES_PREFIX, auto_level, scope_roi
from xt_engine import (
    CancelToken,
    Finished,
    Progress,
    RegionDone,
    Started,
    XTError,
    run_inference,
)
from xt_engine.io import ImageSource, source_from_arrays

DEFAULT_MODEL = "xt_demo_sar"
PROGRESS_S = 0.5  # progress bar + status line at most 2 Hz: each repaint ~30-50 ms under Xvfb


class XTInferenceWidget(QWidget):
    """Dock widget. Emits ``run_finished(cancelled)`` when a run ends (used by tests and scripts)."""

    run_finished = Signal(bool)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker: Any = None
        self._layers_ready = threading.Event()  # set when a run's layers exist (see run())
        self._cancel: CancelToken | None = None
        self._pending: RunContext | None = None  # the run started, until its Started event
        self._pending_store = Path()
        self._progress_shown = 0.0
        self.models = ModelChoice()
        self._last_cancelled = False
        self._store_dir = Path(tempfile.mkdtemp(prefix="napari-xt-"))
        self._run_count = 0
        self.results = RunLayers(napari_viewer)

        self.image_combo = QComboBox()
        self.model_combo = model_combo(DEFAULT_MODEL)
        self.browse_button = button("Checkpoint...")
        self.region_weights_button = button(
            "Region encoder weights...",
            "A plain timm state dict (.safetensors/.pth/.bin) for the chosen architecture's backbone",
        )
        self.context_weights_button = button(
            "Context + head weights...",
            "The context encoder and head weights of the chosen architecture",
        )
        self.model_summary = QLabel()
        self.model_summary.setWordWrap(True)
        self.scope_combo = combo(list(SCOPES))
        self.level_combo = QComboBox()
        self.device_combo = combo(
            ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())],
            "auto: the first CUDA GPU when there is one, else the CPU",
        )
        self.attention_check = QCheckBox("Attention overlay")
        self.attention_check.setToolTip(
            "Also show, per token, how much attention it receives from the context encoder "
            "(for kinds without attention weights: how much context changed it)"
        )
        self.precision_combo = combo(
            ["auto", "fp32", "bf16", "fp16"], "auto: bf16/fp16 autocast on CUDA, fp32 on CPU"
        )
        self.batch_spin = spin(1, 256, 8)
        self.overlap_spin = spin(
            0,
            1024,
            0,
            step=16,
            suffix=" px",
            tip="Each region also reads this many real pixels beyond its output tile on every "
            "side (no seams at region borders; more regions). A multiple of half the model's "
            "token stride (of the stride with the attention overlay).",
        )
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("Ready")
        self.status.setWordWrap(True)

        self.inspector = AttentionInspector(self.viewer, self.status)
        form = QFormLayout()
        for label, row in (
            ("Image", self.image_combo),
            ("Model", hbox(self.model_combo, self.browse_button, stretch_first=True)),
            ("", hbox(self.region_weights_button, self.context_weights_button)),
            ("", self.model_summary),
            ("Scope", self.scope_combo),
            ("Level", self.level_combo),
            ("Device", self.device_combo),
            ("Precision", self.precision_combo),
            ("Batch size", self.batch_spin),
            ("Overlap", self.overlap_spin),
            ("", self.attention_check),
            ("", self.inspector.button),
        ):
            form.addRow(label, row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(hbox(self.run_button, self.cancel_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.browse_button.clicked.connect(self._browse_checkpoint)
        self.region_weights_button.clicked.connect(lambda: self._browse_weights("region"))
        self.context_weights_button.clicked.connect(lambda: self._browse_weights("context"))
        self.model_combo.currentTextChanged.connect(self._show_model_summary)
        self.image_combo.currentTextChanged.connect(self._refresh_levels)
        for event in (
            self.viewer.layers.events.inserted,
            self.viewer.layers.events.removed,
            self.viewer.layers.events.reordered,
        ):
            event.connect(self._refresh_layers)
        # the run stores go with the widget, or at the latest with the process (a viewer closed
        # by a script may never destroy its dock widgets)
        self.destroyed.connect(lambda: shutil.rmtree(self._store_dir, ignore_errors=True))
        atexit.register(shutil.rmtree, self._store_dir, ignore_errors=True)
        self._refresh_layers()
        self._show_model_summary(self.model_combo.currentText())

    # -- choices -------------------------------------------------------------------------------
    def _refresh_scopes(self) -> None:
        """The fixed scopes plus one per Shapes layer (the bounding box of its shapes)."""
        current = self.scope_combo.currentText()
        items = list(SCOPES) + [
            SHAPES_PREFIX + layer.name for layer in self.viewer.layers if isinstance(layer, Shapes)
        ]
        if items == [self.scope_combo.itemText(i) for i in range(self.scope_combo.count())]:
            return
        self.scope_combo.clear()
        self.scope_combo.addItems(items)
        if current in items:
            self.scope_combo.setCurrentText(current)

    def _refresh_layers(self, event: object = None) -> None:
        self._refresh_scopes()
        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        self._refresh_levels()

    def _refresh_levels(self, name: str | None = None) -> None:
        """List the chosen layer's pyramid levels, keeping the user's pick for the same layer."""
        layer = self._image_layer()
        # napari hands plugins proxies, so identify the layer by name and level shapes
        key = (
            (layer.name, tuple(tuple(lvl.shape) for lvl in self._levels(layer)))
            if layer is not None
            else None
        )
        if key == getattr(self, "_levels_key", None):
            return
        self._levels_key = key
        self.level_combo.clear()
        self.level_combo.addItem("auto (from zoom)")
        if layer is not None and layer.multiscale:
            self.level_combo.addItems(
                [
                    f"{k}: {lvl.shape[-2]} x {lvl.shape[-1]}"
                    for k, lvl in enumerate(self._levels(layer))
                ]
            )

    def _image_layer(self) -> Image | None:
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Image) else None

    @staticmethod
    def _levels(layer: Image) -> list[Any]:
        return list(layer.data) if layer.multiscale else [layer.data]

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "xT checkpoint", "", "Checkpoints (*.safetensors)"
        )
        if path:
            self.model_combo.addItem(path)
            self.model_combo.setCurrentText(path)

    def _show_model_summary(self, spec: str) -> None:
        try:
            self.model_summary.setText(self.models.summary(spec))
        except XTError as err:
            self.model_summary.setText(f"cannot load: {err}")

    def _browse_weights(self, part: str) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, f"{part} weights", "", "Weights (*.safetensors *.pth *.pt *.bin)"
        )
        if path:
            self.set_weights(part, path)

    def set_weights(self, part: str, path: str | None) -> None:
        """Use separate weight files with a registered architecture: ``part`` is ``region``
        (a timm state dict for the backbone) or ``context`` (context encoder + head)."""
        if part == "region":
            self.models.region_weights = path
        else:
            self.models.context_weights = path
        self._show_model_summary(self.model_combo.currentText())

    @property
    def region_weights(self) -> str | None:
        return self.models.region_weights

    @property
    def context_weights(self) -> str | None:
        return self.models.context_weights

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        """Start a run on the chosen image layer (returns at once; results arrive as events)."""
        if self._worker is not None:
            return
        layer = self._image_layer()
        if layer is None:
            show_error("xT: add an image layer first (File > Open, or File > Open Sample).")
            return
        try:
            model = self.models.load(self.model_combo.currentText())
            source = source_from_arrays(self._levels(layer), rgb=layer.rgb, name=layer.name)
            level = self._chosen_level(layer, source)
            scope = self.scope_combo.currentText()
            roi = scope_roi(self.viewer, scope, layer, source, level)
            self._run_count += 1
            store = self._store_dir / f"run{self._run_count}.zarr"
            self._cancel = CancelToken()
            events = run_inference(
                source,
                model,
                output=store,
                level=level,
                roi=roi,
                cancel=self._cancel,
                batch_size=self.batch_spin.value(),
                overlap=self.overlap_spin.value(),
                attention=self.attention_check.isChecked(),
                precision=self.precision_combo.currentText(),
                device=self._device(),
            )
        except XTError as err:
            show_error(f"xT: {err}")
            self.status.setText(str(err))
            return
        # the engine validates its inputs and creates the store in the worker; the layers are
        # made when its Started event arrives, in a later turn of the event loop
        self._pending = RunContext(layer, source, level, roi, model, self.batch_spin.value())
        self._pending_store = store
        self.status.setText("Starting...")
        self._set_running(True)
        self._layers_ready = threading.Event()
        self._worker = create_worker(engine_events, events, self._layers_ready, _start_thread=False)
        self._worker.yielded.connect(self._on_event)
        self._worker.errored.connect(self._on_error)
        self._worker.finished.connect(self._on_worker_finished)
        self._worker.start()

    def _on_started(self, first: Started) -> None:
        run, self._pending = self._pending, None
        assert run is not None
        self.inspector.set_context(run)
        attention = self.attention_check.isChecked()
        steps: list[Callable[[], object]] = []
        try:
            steps = self.results.start(
                run.image, run.source, run.level, self._pending_store, run.model, attention
            )
        finally:
            # one turn each, after the segmentation layer's insertion: the attention layer's,
            # then the worker resumes (it waits for the layers: see engine_events),
            # then the progress bar (a repaint, ~30-50 ms under Xvfb)
            text = f"Running {first.total} regions at level {run.level}..."
            steps += [self._layers_ready.set, lambda: self._show_start(first.total, text)]
            run_in_turns(steps)

    def _show_start(self, total: int, text: str) -> None:
        if self._worker is None:  # the run already ended
            return
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.status.setText(text)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
            self.status.setText("Cancelling after the current batch...")

    def _device(self) -> str:
        choice = self.device_combo.currentText()
        if choice == "auto":
            return "cuda:0" if torch.cuda.is_available() else "cpu"
        return choice

    def _chosen_level(self, layer: Image, source: ImageSource) -> int:
        index = self.level_combo.currentIndex()
        return auto_level(self.viewer, layer, source) if index <= 0 else index - 1

    def _on_event(self, event: object) -> None:
        if isinstance(event, XTError):
            self._on_error(event)
        elif isinstance(event, Started):
            self._on_started(event)
        elif isinstance(event, RegionDone):
            self.results.paint(event)
        elif isinstance(event, Progress):
            self.results.refresh()
            now = time.perf_counter()  # QProgressBar.setValue repaints at once: PROGRESS_S
            if now - self._progress_shown < PROGRESS_S and event.done < event.total:
                return
            self._progress_shown = now
            self.progress.setValue(event.done)
            self.status.setText(
                f"{event.done}/{event.total} regions, {event.regions_per_s:.1f} regions/s, "
                f"ETA {event.eta_s:.0f} s"
            )
        elif isinstance(event, Finished):
            verb = "Cancelled" if event.cancelled else "Done"
            text = f"{verb}: {event.done}/{event.total} regions in {event.seconds:.1f} s"
            if event.image_class is not None and event.image_probabilities is not None:
                model = self.models.model
                name = model.config.head.names()[event.image_class] if model else ""
                text += f"; image class {name} (p = {max(event.image_probabilities):.2f})"
            self.status.setText(text)
            self._last_cancelled = event.cancelled

    def _on_error(self, err: Exception) -> None:
        show_error(f"xT: {err}")
        self.status.setText(f"Failed: {err}")
        self._last_cancelled = True

    def _on_worker_finished(self) -> None:
        self._worker = None
        self._set_running(False)
        if self._pending is None:  # the run got as far as its layers
            self.results.finish()
        self._pending = None
        self.run_finished.emit(self._last_cancelled)

    def _set_running(self, running: bool) -> None:
        """While a run goes, only Cancel (and the attention inspector) stay enabled."""
        for kind in (QComboBox, QSpinBox, QCheckBox, QPushButton):
            for control in self.findChildren(kind):
                if control not in (self.cancel_button, self.inspector.button):
                    control.setEnabled(not running)
        self.cancel_button.setEnabled(running)
