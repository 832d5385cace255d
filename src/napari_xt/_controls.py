"""Small constructors for the dock widget's controls (Qt only; no napari, no torch)."""

from __future__ import annotations

from qtpy.QtCore import QSize
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)


def combo(items: list[str], tip: str = "", current: str | None = None) -> QComboBox:
    box = QComboBox()
    box.addItems(items)
    if current is not None:
        box.setCurrentText(current)
    if tip:
        box.setToolTip(tip)
    return box


def narrow_combo(box: QComboBox, chars: int = 16) -> QComboBox:
    """A combo box whose width does not follow its longest item (layer names, checkpoint
    paths and the untrained section's header would widen the dock and squeeze the canvas)."""
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(chars)
    return box


class WrappingLabel(QLabel):
    """A word-wrapped label that takes the width it is given instead of asking for its text's
    (a long summary or error message arriving later would widen the dock), and asks for at
    least ``lines`` lines, or all of its text's at its width: a longer text arriving later
    neither moves the rows below nor is clipped by a dock squeezed to its minimum. Measured
    when asked, in the font napari's stylesheet gave it."""

    def __init__(self, text: str = "", lines: int = 1) -> None:
        super().__init__(text)
        self.lines = lines
        self.setWordWrap(True)
        policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = super().minimumSizeHint()
        reserved = self.lines * self.fontMetrics().lineSpacing()
        needed = self.heightForWidth(self.width()) if self.width() > 0 else 0
        return QSize(hint.width(), max(hint.height(), reserved, needed))

    def setText(self, text: str | None) -> None:  # noqa: N802 (Qt's name)
        super().setText(text)
        self.updateGeometry()  # the new text may need another line: the layout asks again


def wrapping_label(text: str = "", lines: int = 1) -> QLabel:
    """A :class:`WrappingLabel`."""
    return WrappingLabel(text, lines)


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


def model_combo(current: str) -> QComboBox:
    """Registered models with trained weights first; below a separator, a labelled section of
    untrained architectures (a disabled header item), which run only with weight files."""
    from qtpy.QtGui import QStandardItemModel

    from napari_xt._models import UNTRAINED_HEADER, model_sections

    trained, untrained = model_sections()
    box = combo(trained, "registered models with trained weights, or a checkpoint file")
    if untrained:
        box.insertSeparator(box.count())
        box.addItem(UNTRAINED_HEADER)
        items = box.model()
        if isinstance(items, QStandardItemModel):
            header = items.item(box.count() - 1)
            if header is not None:
                header.setEnabled(False)
        box.addItems(untrained)
    box.setCurrentText(current)
    return narrow_combo(box)
