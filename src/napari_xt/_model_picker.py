"""The widget's model controls and their loading state machine (Qt; torch only in workers).

The model combo (registered names, checkpoint files), the two weight-file pickers and the
summary line. A choice is loaded in a napari worker (:func:`napari_xt._models.load_choice`), so
the viewer stays responsive while a large model loads; one load runs at a time: a choice made
while one runs loads next, and the result of a load for an earlier choice is dropped. A caller
that needs the model (Run clicked while it loads) asks :meth:`ModelPicker.when_loaded`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtWidgets import QFileDialog, QWidget

from napari_xt._controls import button, model_combo, wrapping_label
from napari_xt._models import ModelChoice, ModelKey, load_choice
from xt_engine import XTError
from xt_engine.models import XTModel

# what a waiting caller gets: the loaded model, or why it cannot load
LoadOutcome = tuple[XTModel, str] | str


class ModelPicker:
    """The model rows of the dock widget: ``combo`` + ``browse_button``, the two weight-file
    buttons and ``summary`` ("loading ...", the model's summary, or why it cannot load)."""

    def __init__(self, parent: QWidget, default: str) -> None:
        self.parent = parent
        self.models = ModelChoice()
        self.combo = model_combo(default)
        self.browse_button = button("Checkpoint...")
        self.region_weights_button = button(
            "Region encoder weights...",
            "A plain timm state dict (.safetensors/.pth/.bin) for the chosen architecture's backbone",
        )
        self.context_weights_button = button(
            "Context + head weights...",
            "The context encoder and head weights of the chosen architecture",
        )
        self.summary = wrapping_label(lines=2)  # a 2-line summary replaces "loading..."
        self._loader: Any = None  # the worker loading a model
        self._wanted: ModelKey | None = None  # the choice whose model is to be loaded
        self._loaded_last: ModelKey | None = None  # the choice the last finished load was for
        self._waiting: Callable[[XTModel | str], None] | None = None  # see when_loaded
        # told the chosen model whenever it is there (loaded now, or already), e.g. for the
        # level list's pixel size
        self.on_model: Callable[[XTModel], None] | None = None
        # the dock may close (and Qt delete its labels) while a load runs: its outcome is dropped
        self._gone = False
        self.summary.destroyed.connect(self._forget)

        self.browse_button.clicked.connect(self._browse_checkpoint)
        self.region_weights_button.clicked.connect(lambda: self._browse_weights("region"))
        self.context_weights_button.clicked.connect(lambda: self._browse_weights("context"))
        self.combo.currentTextChanged.connect(self.request)

    # -- state ---------------------------------------------------------------------------------
    @property
    def loading(self) -> bool:
        """A model is being loaded."""
        return self._loader is not None

    def current(self) -> XTModel | None:
        """The chosen model if it has loaded, else None."""
        return self.models.loaded(self.models.key_for(self.combo.currentText()))

    def when_loaded(self, callback: Callable[[XTModel | str], None] | None) -> None:
        """Call ``callback`` once with the chosen model when it has loaded (or with the reason
        it cannot load), starting its load if needed; ``None`` forgets a waiting callback."""
        self._waiting = callback
        if callback is not None:
            self.request()

    # -- loading -------------------------------------------------------------------------------
    def request(self, *_: object) -> None:
        """Load the chosen model in a worker; the summary says "loading..." meanwhile. One load
        runs at a time: one still running for an earlier choice finishes, is dropped, and the
        current choice loads next."""
        key = self.models.key_for(self.combo.currentText())
        self._wanted = key
        if self.models.loaded(key) is not None:
            self.summary.setText(self.models.summary)
            model = self.models.model
            if model is not None:
                self._tell(model)
                self._hand_over(model)
            return
        self.summary.setText(f"loading {Path(key[0]).name}...")
        if self._loader is None:
            self._start_load(key)

    def _start_load(self, key: ModelKey) -> None:
        worker = create_worker(_load_outcome, key, _start_thread=False)
        worker.returned.connect(partial(self._on_loaded, key))
        worker.finished.connect(self._on_loader_finished)
        self._loader = worker
        worker.start()

    def _forget(self, *_: object) -> None:
        """The widget is gone: nothing is shown or handed over any more."""
        self._gone = True
        self._waiting = None
        self.on_model = None

    def _on_loaded(self, key: ModelKey, outcome: LoadOutcome) -> None:
        self._loaded_last = key
        if self._gone:
            return  # the dock closed while the model loaded
        if key != self._wanted:
            return  # the choice changed meanwhile: dropped
        if isinstance(outcome, str):
            self.summary.setText(f"cannot load: {outcome}")
            self._hand_over(outcome)
            return
        model, summary = outcome
        self.models.accept(key, model, summary)
        self.summary.setText(summary)
        self._tell(model)
        self._hand_over(model)

    def _tell(self, model: XTModel) -> None:
        if self.on_model is not None:
            self.on_model(model)

    def _hand_over(self, outcome: XTModel | str) -> None:
        callback, self._waiting = self._waiting, None
        if callback is not None:
            callback(outcome)

    def _on_loader_finished(self) -> None:
        self._loader = None
        if self._gone:
            return
        wanted = self._wanted  # a choice made while the last load ran, not tried yet
        if wanted is not None and wanted != self._loaded_last:
            if self.models.loaded(wanted) is None:
                self._start_load(wanted)

    # -- files ---------------------------------------------------------------------------------
    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.parent, "xT checkpoint", "", "Checkpoints (*.safetensors)"
        )
        if path:
            self.combo.addItem(path)
            self.combo.setCurrentText(path)

    def _browse_weights(self, part: str) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.parent, f"{part} weights", "", "Weights (*.safetensors *.pth *.pt *.bin)"
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
        self.request()


def _load_outcome(key: ModelKey) -> LoadOutcome:
    """In the loading worker: the model and its summary, or why it cannot load (the engine's
    message; any other failure of a user's file by its type and text)."""
    try:
        return load_choice(key)
    except XTError as err:
        return str(err)
    except Exception as err:  # a broken weight file raises whatever its reader raises
        return f"{type(err).__name__}: {err}"
