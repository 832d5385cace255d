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


def test_the_engine_installs_without_the_gui_stack() -> None:
    """`pip install napari-xt` gives the engine and the CLI: napari and Qt only come with the
    `napari` extra; the declared minimums are what the code needs (datetime.UTC: Python 3.11;
    nn.RMSNorm: torch 2.4)."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())[
        "project"
    ]
    roots = {re.split(r"[\[<>=!~ ]", dep)[0].lower() for dep in project["dependencies"]}
    assert not roots & {r.lower() for r in (*GUI_ROOTS, "pyqt6", "npe2")}, roots
    assert any(dep.startswith("napari[") for dep in project["optional-dependencies"]["napari"])
    assert project["requires-python"] == ">=3.11"
    (torch_dep,) = [d for d in project["dependencies"] if d.startswith("torch>")]
    assert torch_dep == "torch>=2.4"
    # the minimum check (scripts/check-minimum.sh, `make check-minimum`) runs the engine's
    # tests on exactly these lower bounds
    script = (Path(__file__).resolve().parents[2] / "scripts" / "check-minimum.sh").read_text()
    pins = dict(p.split("==") for p in re.search(r"MIN_PINS=\(([^)]*)\)", script)[1].split())
    assert pins["torch"].startswith("2.4") and "timm>=" + pins["timm"] in project["dependencies"]
    import datetime

    import torch

    assert hasattr(datetime, "UTC") and hasattr(torch.nn, "RMSNorm")
