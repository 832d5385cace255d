"""The widget's image controls: which Image layer a run reads, and at which pyramid level (Qt).

The lists follow the viewer's layer list (inserted, removed, reordered). napari hands plugins
proxies of its layers, so layers are identified by name (and their level shapes), never kept.
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image
from qtpy.QtWidgets import QComboBox

from napari_xt._controls import narrow_combo


class ImagePicker:
    """``combo``: the Image layers by name; ``level_combo``: "auto (from zoom)" and the chosen
    layer's pyramid levels. ``on_change`` is called after the layer list changed."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.combo = narrow_combo(QComboBox())
        self.level_combo = QComboBox()
        self._levels_key: object = None
        self.combo.currentTextChanged.connect(self._refresh_levels)

    def layer(self) -> Image | None:
        """The chosen Image layer, None when there is none."""
        name = self.combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Image) else None

    def refresh(self) -> None:
        """List the viewer's Image layers, keeping the chosen one when it is still there."""
        current = self.combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(names)
        if current in names:
            self.combo.setCurrentText(current)
        self.combo.blockSignals(False)
        self._refresh_levels()

    def _refresh_levels(self, *_: object) -> None:
        """List the chosen layer's pyramid levels, keeping the user's pick for the same layer."""
        layer = self.layer()
        key = (
            (layer.name, tuple(tuple(lvl.shape) for lvl in levels(layer)))
            if layer is not None
            else None
        )
        if key == self._levels_key:
            return
        self._levels_key = key
        self.level_combo.clear()
        self.level_combo.addItem("auto (from zoom)")
        if layer is not None and layer.multiscale:
            self.level_combo.addItems(
                [f"{k}: {lvl.shape[-2]} x {lvl.shape[-1]}" for k, lvl in enumerate(levels(layer))]
            )

    def chosen_level(self) -> int | None:
        """The level picked in the list, None for "auto (from zoom)"."""
        index = self.level_combo.currentIndex()
        return None if index <= 0 else index - 1


def levels(layer: Image) -> list[Any]:
    """The layer's pyramid levels, largest first (one for a plain layer)."""
    return list(layer.data) if layer.multiscale else [layer.data]
