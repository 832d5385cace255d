"""The widget's image controls: which Image layer a run reads, with which channels, at which
pyramid level (Qt; the arrays themselves are put together in :mod:`napari_xt._inputs`).

The lists follow the viewer's layer list (inserted, removed, reordered). napari hands plugins
proxies of its layers, so layers are identified by name (and their level shapes), never kept.

The Channels list says what the chosen layer gives the model: for an RGB or multichannel layer
one line with its channel count; for a single-channel 2-D layer, that layer (always checked)
and every other Image layer that can be stacked with it (same level shapes and dtype, e.g. the
per-channel layers napari-ome-zarr makes). Checked layers become the channels of one input,
in the viewer's layer order (the layer list's bottom layer first), each labelled ``cK:``.
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QListWidget, QListWidgetItem

from napari_xt._controls import narrow_combo
from napari_xt._inputs import (
    layer_axes,
    layer_channels,
    layer_levels,
    layer_source,
    model_plan,
    pixel_text,
    stackable,
    stacked_source,
)
from napari_xt._view import auto_level
from xt_engine.config import TilingConfig
from xt_engine.errors import XTError
from xt_engine.io import ImageSource
from xt_engine.runtime.resolution import level_pixel_size

NAME_ROLE = Qt.ItemDataRole.UserRole
MAX_ROWS = 4  # rows of the Channels list shown before it scrolls
MODEL_LEVEL = "model"  # the level combo's data for "the engine's level at the model's pixel size"


class ImagePicker:
    """``combo``: the Image layers by name; ``channels``: what the run's input is made of (see
    the module docstring); ``level_combo``: the model's level (when the model and the image state
    a pixel size), "auto (from zoom)" and the layer's pyramid levels."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.combo = narrow_combo(QComboBox())
        self.channels = QListWidget()
        self.channels.setToolTip(
            "The model's input channels. Check single-channel layers of the same size to "
            "stack them as channels of one input (in the layer list's order, bottom first)"
        )
        self.level_combo = QComboBox()
        self._levels_key: tuple[Any, ...] | None = None  # (layer key, model pixel size, unit)
        self._tiling: TilingConfig | None = None
        self._checked: set[str] = set()  # layers the user checked to stack with the chosen one
        self.combo.currentTextChanged.connect(self._refresh_levels)
        self.combo.currentTextChanged.connect(self._refresh_channels)
        self.channels.itemChanged.connect(self._on_channel_toggled)

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
        self._refresh_channels()

    # -- channels ------------------------------------------------------------------------------
    def input_layers(self) -> list[Image]:
        """The layers a run reads: the chosen one, or the checked layers in stacking order."""
        layer = self.layer()
        if layer is None:
            return []
        names = [
            item.data(NAME_ROLE)
            for item in self._items()
            if item.checkState() == Qt.CheckState.Checked
        ]
        picked = [self.viewer.layers[n] for n in names if n in self.viewer.layers]
        return picked if len(picked) > 1 else [layer]

    def input_source(self) -> ImageSource:
        """The run's input (raises the engine's InputError when the layers do not fit)."""
        layers = self.input_layers()
        if not layers:
            raise XTError("no image layer", "add one (File > Open, or File > Open Sample)")
        return layer_source(layers[0]) if len(layers) == 1 else stacked_source(layers)

    def set_stacked(self, names: list[str]) -> None:
        """Check these layers (by name) to stack with the chosen one (for scripts and tests)."""
        self._checked = set(names)
        self._refresh_channels()

    def _items(self) -> list[QListWidgetItem]:
        items = [self.channels.item(i) for i in range(self.channels.count())]
        return [item for item in items if item is not None]

    def _refresh_channels(self, *_: object) -> None:
        layer = self.layer()
        self.channels.blockSignals(True)
        self.channels.clear()
        if layer is not None and not layer.rgb and layer.ndim == 2:
            for other in self.viewer.layers:
                if not isinstance(other, Image):
                    continue
                chosen = other.name == layer.name
                if not (chosen or stackable(layer, other)):
                    continue
                item = QListWidgetItem(other.name)
                item.setData(NAME_ROLE, other.name)
                flags = Qt.ItemFlag.ItemIsEnabled
                if not chosen:  # the chosen layer is always one of the channels
                    flags |= Qt.ItemFlag.ItemIsUserCheckable
                item.setFlags(flags)
                checked = chosen or other.name in self._checked
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
                self.channels.addItem(item)
        elif layer is not None:
            item = QListWidgetItem(self._describe(layer))
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.channels.addItem(item)
        self.channels.blockSignals(False)
        self._label_channels()
        rows = min(max(self.channels.count(), 1), MAX_ROWS)
        frame = 2 * self.channels.frameWidth()
        self.channels.setFixedHeight(rows * max(self.channels.sizeHintForRow(0), 16) + frame)

    @staticmethod
    def _describe(layer: Image) -> str:
        try:
            count = layer_channels(layer)
        except XTError:
            return f"{layer.name}: axes not understood (2-D or 3-D with channels)"
        if layer.rgb:
            return f"{layer.name}: {count} channels (RGB{'A' if count == 4 else ''})"
        axis = layer_axes(layer).index("c")
        return f"{layer.name}: {count} channels (axis {axis}, the slider)"

    def _on_channel_toggled(self, item: QListWidgetItem) -> None:
        name = item.data(NAME_ROLE)
        if name is None:
            return
        if item.checkState() == Qt.CheckState.Checked:
            self._checked.add(name)
        else:
            self._checked.discard(name)
        self._label_channels()

    def _label_channels(self) -> None:
        """``cK: name`` on the checked layers when two or more are stacked, else the name."""
        items = [item for item in self._items() if item.data(NAME_ROLE) is not None]
        checked = [item for item in items if item.checkState() == Qt.CheckState.Checked]
        self.channels.blockSignals(True)
        for item in items:
            name = item.data(NAME_ROLE)
            k = checked.index(item) if item in checked else -1
            item.setText(f"c{k}: {name}" if k >= 0 and len(checked) > 1 else name)
        self.channels.blockSignals(False)

    # -- levels --------------------------------------------------------------------------------
    def set_tiling(self, tiling: TilingConfig | None) -> None:
        """The loaded model's tiling: its training pixel size adds the "model's" level entry."""
        self._tiling = tiling
        self._refresh_levels()

    def _refresh_levels(self, *_: object) -> None:
        """List "auto (from zoom)" and the chosen layer's pyramid levels (with their pixel size
        when the image states one), first the level the engine picks at the model's training
        pixel size when both state one (then the default). The user's pick is kept while the
        layer stays the same."""
        layer = self.layer()
        tiling = self._tiling
        key = (
            (layer.name, tuple(tuple(lvl.shape) for lvl in layer_levels(layer)))
            if layer is not None
            else None
        )
        target = (tiling.pixel_size, tiling.pixel_unit) if tiling else (None, None)
        full_key = (key, *target)
        if full_key == self._levels_key:
            return
        same_layer = self._levels_key is not None and self._levels_key[0] == key
        previous = self.level_combo.currentData() if same_layer else None
        self._levels_key = full_key
        self.level_combo.clear()
        source = _source_or_none(layer)
        plan = model_plan(source, tiling) if source is not None else None
        if plan is not None:
            where = (
                f"resampled from level {plan.source.metadata.get('resampled_from', 0)}"
                if plan.resampled
                else f"level {plan.level}"
            )
            size = pixel_text(*target)
            self.level_combo.addItem(f"model's {size}: {where}", MODEL_LEVEL)
        self.level_combo.addItem("auto (from zoom)", None)
        if layer is not None and layer.multiscale:
            try:
                axes = layer_axes(layer)
            except XTError:
                axes = "yx"
            y, x = axes.index("y") - len(axes), axes.index("x") - len(axes)
            for k, lvl in enumerate(layer_levels(layer)):
                level_size = level_pixel_size(source, k) if source is not None else None
                pixel = pixel_text(level_size, source.unit if source is not None else None)
                text = f"{k}: {lvl.shape[y]} x {lvl.shape[x]}" + (f" - {pixel}" if pixel else "")
                self.level_combo.addItem(text, k)
        index = self.level_combo.findData(previous)
        if previous is not None and index >= 0:
            self.level_combo.setCurrentIndex(index)

    def chosen_level(self) -> int | None:
        """The level picked in the list, None for "auto (from zoom)" and the model's entry."""
        data = self.level_combo.currentData()
        return data if isinstance(data, int) else None

    def model_level_chosen(self) -> bool:
        """The run takes the engine's level for the model's pixel size (:func:`model_plan`)."""
        return bool(self.level_combo.currentData() == MODEL_LEVEL)

    def resolve_level(
        self, layer: Image, source: ImageSource, tiling: TilingConfig
    ) -> tuple[ImageSource, int]:
        """The source and level a run reads: the engine's level at the model's pixel size (a
        resampled source when no level is within 10%, as ``xt infer`` without ``--level``),
        the level picked, or the one from the zoom (:func:`~napari_xt._view.auto_level`)."""
        if self.model_level_chosen():
            plan = model_plan(source, tiling)
            if plan is not None:
                return plan.source, plan.level
        level = self.chosen_level()
        return source, auto_level(self.viewer, layer, source) if level is None else level


def _source_or_none(layer: Image | None) -> ImageSource | None:
    """The engine's view of ``layer`` for its pixel sizes (a file the reader opened is only
    opened, nothing is read); None without a layer or when its axes are not understood."""
    if layer is None:
        return None
    try:
        return layer_source(layer)
    except XTError:
        return None
