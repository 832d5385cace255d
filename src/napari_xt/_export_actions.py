"""The widget's **Export...**, **Copy command** and **Copy Slurm script** buttons (Qt).

**Export...** opens a small dialog on the last run's result store: the engine's formats that
fit it (:func:`export_formats`) and the file to write, by default beside the store
(``run-....geojson``). The export runs ``xt_engine.export.export_store`` in a napari thread
worker, never on the GUI thread; an existing file is replaced only when the user confirms
(``overwrite=True``); success and failure go to the widget's status line and a notification.
Export is disabled while a run goes, while an export runs and when there is no store.

The copy buttons put :func:`napari_xt._commands.infer_command` / :func:`slurm_script` on the
clipboard (``QApplication.clipboard()``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLineEdit,
    QMessageBox,
    QWidget,
)

from napari_xt._commands import infer_command, slurm_script
from napari_xt._controls import button, hbox
from xt_engine.errors import XTError
from xt_engine.export import FORMATS, export_store
from xt_engine.store.safety import read_store_attrs

#: format -> (menu text, file name ending after the store's stem)
FORMAT_FILES: dict[str, tuple[str, str]] = {
    "geojson": ("GeoJSON (QuPath, GIS): polygons / points", ".geojson"),
    "geotiff": ("GeoTIFF (COG in the scene's CRS)", ".tif"),
    "ome-tiff": ("OME-TIFF label pyramid (QuPath, napari)", ".ome.tif"),
    "csv": ("CSV: detections", "-detections.csv"),
    "parquet": ("Parquet: detections", "-detections.parquet"),
    "report": ("Report: per-class areas and counts (CSV)", "-report.csv"),
}


def export_formats(xt: dict[str, Any]) -> list[str]:
    """The engine's formats (:data:`xt_engine.export.FORMATS`) that fit a store with these
    ``xt`` attributes: the label formats when it holds a label image (geotiff only with a
    georeference), csv / parquet for a detection run (parquet when pyarrow is installed), and
    the report always."""
    task = xt.get("model_config", {}).get("head", {}).get("task", "segmentation")
    fits = {"report"}
    if int(xt.get("label_levels", 0)) > 0:
        fits |= {"geojson", "ome-tiff"}
        if xt.get("georeference"):
            fits.add("geotiff")
    if task == "detection":
        fits.add("csv")
        if importlib.util.find_spec("pyarrow") is not None:
            fits.add("parquet")
    return [name for name in FORMATS if name in fits]


def default_target(store: Path, to: str) -> Path:
    """``run-....geojson`` (and so on) beside ``store``."""
    return store.parent / (store.name.removesuffix(".zarr") + FORMAT_FILES[to][1])


class ExportDialog(QDialog):
    """The format list, the file (**...** to pick it) and, for an unfinished store, whether to
    export what is there."""

    def __init__(self, parent: QWidget, store: Path, xt: dict[str, Any]) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Export {store.name}")
        # closed, it goes: its buttons would stay the widget's children (disabled during runs)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.store = store
        self.format_combo = QComboBox()
        for name in export_formats(xt):
            self.format_combo.addItem(FORMAT_FILES[name][0], name)
        self.path_edit = QLineEdit()
        self.path_edit.setMinimumWidth(320)
        self.browse_button = button("...", "Choose the file to write")
        self.partial_check = QCheckBox("The run did not finish: export what is done")
        self.partial_check.setVisible(not xt.get("complete", False))
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        form = QFormLayout(self)
        form.addRow("Format", self.format_combo)
        form.addRow("File", hbox(self.path_edit, self.browse_button, stretch_first=True))
        form.addRow("", self.partial_check)
        form.addRow(self.buttons)
        self.format_combo.currentIndexChanged.connect(self._on_format)
        self.browse_button.clicked.connect(self._browse)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._on_format()

    def format(self) -> str:
        return str(self.format_combo.currentData())

    def set_format(self, to: str) -> None:
        self.format_combo.setCurrentIndex(self.format_combo.findData(to))

    def target(self) -> Path:
        return Path(self.path_edit.text().strip()).expanduser()

    def _on_format(self, *_: object) -> None:
        """The file name follows the format, in the folder shown (beside the store at first)."""
        folder = self.target().parent if self.path_edit.text().strip() else self.store.parent
        self.path_edit.setText(str(folder / default_target(self.store, self.format()).name))

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export to", str(self.target()), options=QFileDialog.Option.DontConfirmOverwrite
        )  # (replacing is confirmed once, when the export starts)
        if path:
            self.path_edit.setText(path)


def ask_overwrite(parent: QWidget, path: Path) -> bool:
    """Whether to replace the existing file ``path`` (a Yes / No question, No the default)."""
    answer = QMessageBox.question(
        parent,
        "Replace the file?",
        f"{path} already exists. Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return bool(answer == QMessageBox.StandardButton.Yes)


class ExportActions:
    """The three buttons for the widget ``widget`` (its ``results.store``, ``status``,
    ``viewer`` and setting controls); ``confirm_overwrite(path)`` asks before a file is
    replaced (tests replace it)."""

    def __init__(self, widget: Any) -> None:
        self.widget = widget
        self.export_button = button(
            "Export...", "Write the last run's result as GeoJSON, GeoTIFF, OME-TIFF, CSV or report"
        )
        self.copy_button = button(
            "Copy command", "Copy the equivalent `xt infer` command line to the clipboard"
        )
        self.slurm_button = button(
            "Copy Slurm script",
            "Copy a Slurm job-array script running `xt batch` with these settings",
        )
        self.export_button.setEnabled(False)
        self.dialog: ExportDialog | None = None
        self.worker: Any = None
        self.running = False  # a run of the widget goes
        self.confirm_overwrite: Callable[[Path], bool] = lambda path: ask_overwrite(widget, path)
        self.export_button.clicked.connect(self.open_dialog)
        self.copy_button.clicked.connect(self.copy_command)
        self.slurm_button.clicked.connect(self.copy_slurm_script)

    def row(self) -> Any:
        return hbox(self.export_button, self.copy_button, self.slurm_button)

    # -- export --------------------------------------------------------------------------------
    def store(self) -> Path | None:
        """The last run's store, when it exists."""
        store = self.widget.results.store
        return store if store is not None and read_store_attrs(store) is not None else None

    def set_running(self, running: bool) -> None:
        """A run starts or ends: Export only between runs, with a store and no export going."""
        self.running = running
        self.refresh()

    def refresh(self) -> None:
        free = not self.running and self.worker is None
        self.export_button.setEnabled(free and self.store() is not None)
        self.copy_button.setEnabled(not self.running)
        self.slurm_button.setEnabled(not self.running)

    def open_dialog(self) -> ExportDialog | None:
        """Show the export dialog for the last run's store (returns it: scripts and tests set
        its fields and press OK)."""
        store = self.store()
        xt = read_store_attrs(store) if store is not None else None
        if store is None or xt is None or self.running or self.worker is not None:
            return None
        self.dialog = ExportDialog(self.widget, store, xt)
        dialog = self.dialog
        dialog.accepted.connect(
            lambda: self.start(
                store, dialog.format(), dialog.target(), dialog.partial_check.isChecked()
            )
        )
        dialog.open()
        return dialog

    def start(self, store: Path, to: str, target: Path, partial: bool = False) -> bool:
        """Export ``store`` as ``to`` to ``target`` in a worker; an existing ``target`` only
        after ``confirm_overwrite``. Returns whether an export started."""
        overwrite = False
        if target.is_file():
            if not self.confirm_overwrite(target):
                self.widget.status.setText(f"Not exported: {target.name} exists (kept)")
                return False
            overwrite = True
        self.widget.status.setText(f"Exporting {store.name} as {to}...")
        self.worker = create_worker(
            _export_outcome,
            store,
            to,
            target,
            overwrite=overwrite,
            partial=partial,
            _start_thread=False,
        )
        self.worker.returned.connect(self._exported)
        self.worker.finished.connect(self._done)
        self.refresh()
        self.worker.start()
        return True

    def _exported(self, outcome: dict[str, Any] | str) -> None:
        if isinstance(outcome, str):
            self.widget.status.setText(f"Export failed: {outcome}")
            show_error(f"xT: export failed: {outcome}")
            return
        text = f"Exported {outcome.get('format')} to {outcome.get('out')}"
        self.widget.status.setText(text)
        show_info(f"xT: {text}")

    def _done(self) -> None:
        self.worker = None
        self.refresh()

    # -- commands ------------------------------------------------------------------------------
    def copy_command(self) -> None:
        """The equivalent ``xt infer`` line on the clipboard (with ``#`` notes above it for what
        has no command-line equivalent)."""
        try:
            command = infer_command(self.widget)
        except XTError as err:
            self.widget.status.setText(f"Nothing copied: {err}")
            return
        _to_clipboard(command.text())
        notes = len(command.notes)
        extra = f" ({notes} note(s) in # lines above it: edit it first)" if notes else ""
        self.widget.status.setText(f"Copied the xt infer command to the clipboard{extra}")

    def copy_slurm_script(self) -> None:
        """A Slurm job-array script running ``xt batch`` with these settings on the clipboard."""
        try:
            script = slurm_script(self.widget)
        except XTError as err:
            self.widget.status.setText(f"Nothing copied: {err}")
            return
        _to_clipboard(script)
        self.widget.status.setText(
            "Copied a Slurm script (xt batch, a job array) to the clipboard: adjust its #SBATCH "
            "lines and INPUT"
        )


def _export_outcome(
    store: Path, to: str, target: Path, *, overwrite: bool, partial: bool
) -> dict[str, Any] | str:
    """In the export worker: the engine's summary, or why it failed (the engine's message; any
    other failure, a full disk say, by its type and text), so napari shows no traceback."""
    try:
        return export_store(store, to, target, overwrite=overwrite, partial=partial)
    except XTError as err:
        return str(err)
    except Exception as err:  # a writer's own failure (OSError, GDAL's, tifffile's)
        return f"{type(err).__name__}: {err}"


def _to_clipboard(text: str) -> None:
    clipboard = QApplication.clipboard()
    if clipboard is not None:
        clipboard.setText(text)
