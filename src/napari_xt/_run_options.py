"""The widget's run options: scope, device, precision, batch size, overlap, foreground and the
attention overlay (Qt; the Foreground choice becomes the engine's spec in
:mod:`napari_xt._foreground`), and the run with that foreground as the widget's worker runs it
(:func:`run_with_foreground`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from napari.layers import Shapes
from qtpy.QtWidgets import QCheckBox, QComboBox, QWidget

from napari_xt._controls import combo, narrow_combo, spin
from napari_xt._foreground import MaskPlan, foreground_items, foreground_spec
from napari_xt._view import SCOPES, SHAPES_PREFIX
from xt_engine import run_inference
from xt_engine.io import ImageSource
from xt_engine.models import XTModel
from xt_engine.runtime.precision import slow_precision_note
from xt_engine.store.safety import read_store_attrs


class RunOptions:
    """The controls, each a public attribute the widget lays out (:meth:`rows`)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.scope_combo = combo(list(SCOPES))
        self.device_combo = combo(
            ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())],
            "auto: the first CUDA GPU when there is one, else the CPU",
        )
        slow_bf16 = slow_precision_note("bf16", "cpu")
        self.precision_combo = combo(
            ["auto", "fp32", "bf16", "fp16"],
            "auto: bf16/fp16 autocast on CUDA, fp32 on CPU"
            + (f". bf16 on the CPU: {slow_bf16}" if slow_bf16 else ""),
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
        self.foreground_combo = narrow_combo(
            combo(
                foreground_items(viewer),
                "Which regions run. auto: tissue (Otsu) on brightfield slides, pixels with data "
                "on scenes, else all; none: all; or a mask: a Labels layer (nonzero) or the "
                "shapes of a Shapes layer. Regions without foreground are skipped (background).",
            )
        )
        self.attention_check = QCheckBox("Attention overlay")
        self.attention_check.setToolTip(
            "Also show, per token, how much attention it receives from the context encoder "
            "(for kinds without attention weights: how much context changed it)"
        )

    def rows(self, level_combo: QWidget) -> list[tuple[str, QWidget]]:
        """(label, control) rows for the widget's form, in order (the attention check apart;
        the image picker's level list after the scope)."""
        return [
            ("Scope", self.scope_combo),
            ("Level", level_combo),
            ("Device", self.device_combo),
            ("Precision", self.precision_combo),
            ("Batch size", self.batch_spin),
            ("Overlap", self.overlap_spin),
            ("Foreground", self.foreground_combo),
        ]

    def refresh(self) -> None:
        """Follow the layer list: the scopes (the fixed ones plus one per Shapes layer: the
        bounding box of its shapes) and the foregrounds (the methods plus every Labels and
        Shapes layer); a choice is kept while its layer is there."""
        shapes = [lyr.name for lyr in self.viewer.layers if isinstance(lyr, Shapes)]
        _set_items(self.scope_combo, list(SCOPES) + [SHAPES_PREFIX + name for name in shapes])
        _set_items(self.foreground_combo, foreground_items(self.viewer))

    def device(self) -> str:
        """The chosen device, ``auto`` resolved."""
        choice = self.device_combo.currentText()
        if choice == "auto":
            return "cuda:0" if torch.cuda.is_available() else "cpu"
        return choice

    def foreground(self, image: Any, shape0: tuple[int, int]) -> object:
        """The engine's ``foreground`` for a run on the Image layer ``image`` of level-0 shape
        ``shape0``: a method name or a mask plan the worker rasterises (InputError when the
        chosen layer is gone or empty)."""
        return foreground_spec(self.viewer, self.foreground_combo.currentText(), image, shape0)


def run_with_foreground(
    foreground: object, source: ImageSource, model: XTModel, **kwargs: Any
) -> Any:
    """``run_inference`` in the worker, with a layer's mask made there first (a Shapes layer's
    rasterising takes ~1 s: never on the GUI thread); its errors arrive as the engine's do."""
    spec = foreground.mask() if isinstance(foreground, MaskPlan) else foreground
    yield from run_inference(source, model, foreground=spec, **kwargs)


def skipped_text(store: Path | None) -> str:
    """``; N of M regions skipped (no foreground, METHOD)`` from the store's ``xt`` attributes
    (read on the GUI thread once a run ended: a small JSON file), or nothing."""
    xt = read_store_attrs(store) if store is not None else None
    fg = xt.get("foreground") if xt else None
    if not isinstance(fg, dict) or not fg.get("regions_skipped"):
        return ""
    total = int(fg["regions_run"]) + int(fg["regions_skipped"])
    return f"; {fg['regions_skipped']} of {total} regions skipped (no foreground, {fg['method']})"


def _set_items(box: QComboBox, items: list[str]) -> None:
    """Replace a combo box's items, keeping its current one when it is still there."""
    if items == [box.itemText(i) for i in range(box.count())]:
        return
    current = box.currentText()
    box.blockSignals(True)
    box.clear()
    box.addItems(items)
    if current in items:
        box.setCurrentText(current)
    box.blockSignals(False)
