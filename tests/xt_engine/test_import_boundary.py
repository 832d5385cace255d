"""The engine never imports the GUI stack (napari, Qt, magicgui)."""

from __future__ import annotations

import subprocess
import sys

GUI_ROOTS = (
    "napari",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "magicgui",
    "superqt",
    "vispy",
)


def test_engine_imports_no_gui_modules() -> None:
    code = (
        "import sys, xt_engine, xt_engine.cli, xt_engine.demo, xt_engine.overview\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({GUI_ROOTS!r}))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"xt_engine imported GUI modules: {result.stdout}"
