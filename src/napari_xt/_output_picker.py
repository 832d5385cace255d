"""The widget's output row: the folder each run writes its new result store into (Qt).

It shows the chosen image's folder (:func:`napari_xt._settings.output_folder`: beside the image
file, or the folder last picked for it) and remembers a folder the user types or picks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QLineEdit, QWidget

from napari_xt._controls import button
from napari_xt._settings import output_folder, remember_output_folder


class OutputPicker:
    """``edit`` (the folder) and ``button`` (**...**) for the image ``layer()`` returns."""

    def __init__(self, parent: QWidget, layer: Callable[[], Any]) -> None:
        self.parent = parent
        self._layer = layer
        self._key: tuple[str, str | None] | None = None  # (layer name, its file) shown now
        self.edit = QLineEdit()
        self.edit.setToolTip(
            "Folder for the result stores: each run writes a new run-*.zarr there, kept after "
            "napari closes (default: <image name>-xt beside an image file)"
        )
        self.button = button("...", "Choose the output folder")
        self.button.clicked.connect(self._browse)
        self.edit.editingFinished.connect(lambda: self.set_folder(self.edit.text()))

    def folder(self) -> str:
        return self.edit.text().strip()

    def image_path(self) -> str | None:
        """The file the chosen image layer was read from (``layer.source.path``), if any."""
        path = getattr(getattr(self._layer(), "source", None), "path", None)
        return str(path) if path else None

    def refresh(self, *_: object) -> None:
        """Show the chosen image's output folder, when the image changed."""
        layer = self._layer()
        key = (layer.name if layer is not None else "", self.image_path())
        if key == self._key:
            return
        self._key = key
        self.edit.setText(str(output_folder(key[1])))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self.parent, "Folder for xT results", self.edit.text()
        )
        if folder:
            self.set_folder(folder)

    def set_folder(self, folder: str | Path) -> None:
        """Write the next runs' stores into ``folder``, remembered for this image (or, for an
        image without a file, for all such images)."""
        text = str(folder).strip()
        if text:
            self.edit.setText(text)
            remember_output_folder(text, self.image_path())
