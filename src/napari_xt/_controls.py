"""Small constructors for the dock widget's controls (Qt only; no napari, no torch)."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QHBoxLayout, QPushButton, QSpinBox, QWidget


def combo(items: list[str], tip: str = "", current: str | None = None) -> QComboBox:
    box = QComboBox()
    box.addItems(items)
    if current is not None:
        box.setCurrentText(current)
    if tip:
        box.setToolTip(tip)
    return box


def spin(
    low: int, high: int, value: int, step: int = 1, suffix: str = "", tip: str = ""
) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setSingleStep(step)
    if suffix:
        box.setSuffix(suffix)
    if tip:
        box.setToolTip(tip)
    return box


def button(text: str, tip: str = "") -> QPushButton:
    widget = QPushButton(text)
    if tip:
        widget.setToolTip(tip)
    return widget


def hbox(*widgets: QWidget, stretch_first: bool = False) -> QHBoxLayout:
    """The widgets side by side (the first one taking the spare width if asked)."""
    row = QHBoxLayout()
    for i, widget in enumerate(widgets):
        row.addWidget(widget, 1 if stretch_first and i == 0 else 0)
    return row
