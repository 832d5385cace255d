"""The "xT inference" dock widget: pick an image layer and a model, run, watch labels paint in.

The engine's generator runs in a napari thread worker and writes an OME-Zarr result store, a new
one per run in the output folder (beside the image file, or a folder the user picked; see
:mod:`napari_xt._settings`), kept after the session; an interrupted run's store can be resumed.
The segmentation layer reads that store lazily as a multiscale Labels layer and is refreshed on
the main thread in the worker's ``yielded`` callback, so memory stays bounded for whole slides.
Models load in a napari worker too (:mod:`napari_xt._model_picker`): the viewer stays
responsive while a large one loads, and a Run clicked meanwhile starts when it is ready. The image
(layer, channels, level), run option and output rows are in :mod:`napari_xt._image_picker`,
:mod:`napari_xt._run_options` and :mod:`napari_xt._output_picker`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_xt._controls import button, hbox, wrapping_label
from napari_xt._export_actions import ExportActions
from napari_xt._image_picker import ImagePicker
from napari_xt._inputs import check_channels
from napari_xt._inspect import AttentionInspector, RunContext
from napari_xt._model_picker import ModelPicker
from napari_xt._models import ModelChoice
from napari_xt._output_picker import OutputPicker
from napari_xt._results import RunLayers
from napari_xt._run_options import RunOptions, run_with_foreground, skipped_text
from napari_xt._settings import new_store_path
from napari_xt._threads import engine_events, run_in_turns
from napari_xt._view import scope_roi
from xt_engine import (
    CancelToken,
    Finished,
    Progress,
    RegionDone,
    Started,
    XTError,
)
from xt_engine.models import XTModel
from xt_engine.store.safety import read_store_attrs

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
        self._resuming = False  # the pending run resumes its store
        self._current: RunContext | None = None  # the run in progress (from its Started event)
        self._last_run: RunContext | None = None  # the last run that started (for Resume)
        self._progress_shown = 0.0
        self._run_waiting = False  # Run was clicked; it starts when the model has loaded
        self._last_cancelled = False
        self.results = RunLayers(napari_viewer)

        self.images = ImagePicker(napari_viewer)
        self.image_combo = self.images.combo
        self.level_combo = self.images.level_combo
        self.model_picker = ModelPicker(self, DEFAULT_MODEL)
        self.model_combo = self.model_picker.combo
        self.model_summary = self.model_picker.summary
        self.model_picker.on_model = lambda model: self.images.set_tiling(model.config.tiling)
        self.options = RunOptions(napari_viewer)
        self.scope_combo = self.options.scope_combo
        self.device_combo = self.options.device_combo
        self.precision_combo = self.options.precision_combo
        self.batch_spin = self.options.batch_spin
        self.overlap_spin = self.options.overlap_spin
        self.foreground_combo = self.options.foreground_combo
        self.attention_check = self.options.attention_check
        self.output = OutputPicker(self, self.images.layer)
        self.output_edit = self.output.edit
        self.run_button = QPushButton("Run")
        self.resume_button = button(
            "Resume", "Continue the last run's interrupted store (same image, model and settings)"
        )
        self.resume_button.setEnabled(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = wrapping_label("Ready", lines=2)  # "Done: ...; N of M regions skipped (...)"

        self.inspector = AttentionInspector(self.viewer, self.status)
        self.exports = ExportActions(self)  # Export..., Copy command, Copy Slurm script
        form = QFormLayout()
        picker = self.model_picker
        for label, row in (
            ("Image", self.image_combo),
            ("Channels", self.images.channels),
            ("Model", hbox(self.model_combo, picker.browse_button, stretch_first=True)),
            ("", hbox(picker.region_weights_button, picker.context_weights_button)),
            ("", self.model_summary),
        ):
            form.addRow(label, row)
        for label, control in self.options.rows(self.level_combo):
            form.addRow(label, control)
        form.addRow("Output", hbox(self.output_edit, self.output.button, stretch_first=True))
        form.addRow("", self.attention_check)
        form.addRow("", self.inspector.button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(hbox(self.run_button, self.resume_button, self.cancel_button))
        layout.addLayout(self.exports.row())
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.run_button.clicked.connect(self.run)
        self.resume_button.clicked.connect(self.resume)
        self.cancel_button.clicked.connect(self.cancel)
        self.image_combo.currentTextChanged.connect(self.output.refresh)
        for event in (
            self.viewer.layers.events.inserted,
            self.viewer.layers.events.removed,
            self.viewer.layers.events.reordered,
        ):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self.model_picker.request()

    # -- choices -------------------------------------------------------------------------------
    def _refresh_layers(self, event: object = None) -> None:
        self.images.refresh()
        self.options.refresh()
        self.output.refresh()

    def _image_layer(self) -> Image | None:
        return self.images.layer()

    def set_output_folder(self, folder: str | Path) -> None:
        """Write the next runs' stores into ``folder``, remembered for this image (or, for an
        image without a file, for all such images)."""
        self.output.set_folder(folder)

    # -- the model -----------------------------------------------------------------------------
    @property
    def models(self) -> ModelChoice:
        return self.model_picker.models

    @property
    def model_loading(self) -> bool:
        """A model is being loaded."""
        return self.model_picker.loading

    def set_weights(self, part: str, path: str | None) -> None:
        """Separate weight files for a registered architecture (see :class:`ModelPicker`)."""
        self.model_picker.set_weights(part, path)

    @property
    def region_weights(self) -> str | None:
        return self.models.region_weights

    @property
    def context_weights(self) -> str | None:
        return self.models.context_weights

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        """Start a run on the chosen image layer (returns at once; results arrive as events).
        If the chosen model is still loading (or not loaded), the run starts when it is."""
        if self._worker is not None or self._run_waiting:
            return
        if self.inspector.busy:
            self.status.setText("Wait for the attention inspection to finish, then run.")
            return
        if self._image_layer() is None:
            show_error("xT: add an image layer first (File > Open, or File > Open Sample).")
            return
        model = self.model_picker.current()
        self._set_running(True)
        if model is None:
            self._run_waiting = True
            self.status.setText("Loading the model; the run starts when it has loaded...")
            self.model_picker.when_loaded(self._on_model_for_run)
            return
        self._start_run(model)

    def _on_model_for_run(self, outcome: XTModel | str) -> None:
        """The model a waiting Run asked for has loaded (or cannot load)."""
        self._run_waiting = False
        if isinstance(outcome, str):
            self._end_without_run(f"Cannot load the model: {outcome}")
        else:
            self._start_run(outcome)

    def _start_run(self, model: XTModel) -> None:
        """A new run of ``model`` with the widget's choices, into a new store."""
        layer = self._image_layer()
        if layer is None:
            self._end_without_run("the image layer is gone")
            return
        folder = self.output.folder()
        try:
            if not folder:
                raise XTError("no output folder", "choose one with the ... button")
            source = self.images.input_source()
            check_channels(source, model)  # before the run: the layer or the model to change
            source, level = self.images.resolve_level(layer, source, model.config.tiling)
            roi = scope_roi(self.viewer, self.scope_combo.currentText(), layer, source, level)
            foreground = self.options.foreground(layer, source.shape_yx(0))
        except XTError as err:
            self._end_without_run(str(err))
            return
        run = RunContext(
            layer,
            source,
            level,
            roi,
            model,
            self.batch_spin.value(),
            overlap=self.overlap_spin.value(),
            device=self.options.device(),
            attention=self.attention_check.isChecked(),
            precision=self.precision_combo.currentText(),
            store=new_store_path(folder),
            foreground=foreground,
        )
        self._launch(run, resume=False)

    def resume(self) -> None:
        """Continue the last run's interrupted store (its image, model and settings)."""
        run = self._last_run
        if self._worker is not None or self._run_waiting or run is None or not self._resumable():
            return
        if self.inspector.busy:
            self.status.setText("Wait for the attention inspection to finish, then resume.")
            return
        self._set_running(True)
        self._launch(run, resume=True)

    def _resumable(self) -> bool:
        """The last run's store exists and is not complete (cancelled, failed or killed)."""
        store = self._last_run.store if self._last_run is not None else None
        xt = read_store_attrs(store) if store is not None else None
        return xt is not None and not xt.get("complete", False)

    def _launch(self, run: RunContext, resume: bool) -> None:
        """Hand the engine's generator for ``run`` to a worker (controls already disabled)."""
        self._cancel = CancelToken()
        events = run_with_foreground(
            run.foreground,
            run.source,
            run.model,
            output=run.store,
            resume=resume,
            level=run.level,
            roi=run.roi,
            cancel=self._cancel,
            batch_size=run.batch_size,
            overlap=run.overlap,
            attention=run.attention,
            precision=run.precision,
            device=run.device,
        )
        # the engine validates its inputs and creates the store in the worker; the layers are
        # made when its Started event arrives, in a later turn of the event loop
        self._pending, self._resuming = run, resume
        self._last_cancelled = False
        self.status.setText("Resuming..." if resume else "Starting...")
        self._layers_ready = threading.Event()
        self._worker = create_worker(engine_events, events, self._layers_ready, _start_thread=False)
        self._worker.yielded.connect(self._on_event)
        self._worker.errored.connect(self._on_error)
        self._worker.finished.connect(self._on_worker_finished)
        self._worker.start()

    def _end_without_run(self, message: str, error: bool = True) -> None:
        """A run that never reached the engine: say why, give the controls back."""
        if error:
            show_error(f"xT: {message}")
        self.status.setText(message)
        self._set_running(False)
        self.run_finished.emit(True)

    def _on_started(self, first: Started) -> None:
        run, self._pending = self._pending, None
        assert run is not None
        self._current = self._last_run = run
        self.inspector.set_context(run)
        steps: list[Callable[[], object]] = []
        try:
            assert run.store is not None
            steps = self.results.start(
                run.image,
                run.source,
                run.level,
                run.store,
                run.model,
                run.attention,
                resume=self._resuming,
            )
        finally:
            # one turn each, after the segmentation layer's insertion: the attention layer's,
            # then the worker resumes (it waits for the layers: see engine_events),
            # then the progress bar (a repaint, ~30-50 ms under Xvfb)
            verb = "Resuming" if self._resuming else "Running"
            text = f"{verb} {first.total} regions at level {run.level}..."
            steps += [self._layers_ready.set, lambda: self._show_start(first.total, text)]
            run_in_turns(steps)

    def _show_start(self, total: int, text: str) -> None:
        if self._worker is None:  # the run already ended
            return
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.status.setText(text)

    def cancel(self) -> None:
        if self._run_waiting:  # the model was still loading: nothing started
            self._run_waiting = False
            self.model_picker.when_loaded(None)
            self._end_without_run("Cancelled before the start", error=False)
        elif self._cancel is not None and self._worker is not None:
            self._cancel.cancel()
            self.status.setText("Cancelling after the current batch...")

    def _on_event(self, event: object) -> None:
        if isinstance(event, XTError):
            self._on_error(event)
        elif isinstance(event, Started):
            self._on_started(event)
        elif isinstance(event, RegionDone):
            self.results.paint(event)
        elif isinstance(event, Progress):
            redrew = self.results.refresh()
            now = time.perf_counter()  # QProgressBar.setValue repaints at once: PROGRESS_S
            if now - self._progress_shown < PROGRESS_S and event.done < event.total:
                return
            self._progress_shown = now
            if redrew and event.done < event.total:  # the two repaints in two turns
                run_in_turns([partial(self._show_progress, event)])
            else:
                self._show_progress(event)
        elif isinstance(event, Finished):
            verb = "Cancelled" if event.cancelled else "Done"
            text = f"{verb}: {event.done}/{event.total} regions in {event.seconds:.1f} s"
            text += skipped_text(self._current.store if self._current is not None else None)
            if event.image_class is not None and event.image_probabilities is not None:
                model = self._current.model if self._current is not None else None
                name = model.config.head.names()[event.image_class] if model else ""
                text += f"; image class {name} (p = {max(event.image_probabilities):.2f})"
            self.status.setText(text)
            self._last_cancelled = event.cancelled

    def _show_progress(self, event: Progress) -> None:
        if self._worker is None:  # the run ended meanwhile (its last Progress is shown at once)
            return
        self.progress.setValue(event.done)
        self.status.setText(
            f"{event.done}/{event.total} regions, {event.regions_per_s:.1f} regions/s, "
            f"ETA {event.eta_s:.0f} s"
        )

    def _on_error(self, err: Exception) -> None:
        show_error(f"xT: {err}")
        self.status.setText(f"Failed: {err}")
        self._last_cancelled = True

    def _on_worker_finished(self) -> None:
        self._worker = None
        self._set_running(False)
        if self._pending is None:  # the run got as far as its layers
            self.results.finish()
        self._pending, self._current = None, None
        self.resume_button.setEnabled(self._resumable())
        self.run_finished.emit(self._last_cancelled)

    def _set_running(self, running: bool) -> None:
        """While a run goes (or waits for its model), only Cancel stays enabled; the attention
        inspector is off (it shares the run's model)."""
        for kind in (QComboBox, QSpinBox, QCheckBox, QPushButton):
            for control in self.findChildren(kind):
                if control is not self.cancel_button:
                    control.setEnabled(not running)
        self.output_edit.setEnabled(not running)
        self.images.channels.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.inspector.set_running(running)
        self.exports.set_running(running)
        self.resume_button.setEnabled(not running and self._resumable())
