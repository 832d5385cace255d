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


def test_the_command_line_starts_without_torch_and_the_public_names_resolve() -> None:
    """`xt --help` and usage errors answer without importing torch, timm or numpy (~9 s of
    imports on a 2-core CPU); every public name of `xt_engine` and `xt_engine.runtime` is
    still importable from the package, and an unknown one is an AttributeError."""
    code = (
        "import sys, xt_engine.cli\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'numpy'})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"`import xt_engine.cli` imported {result.stdout}"
    helped = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xt_engine.cli", "infer", "--help"],
        capture_output=True,
        text=True,
    )
    assert helped.returncode == 0 and "--feature-cache-mib" in helped.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in helped.stderr.splitlines()}
    assert not imported & {"torch", "timm"}, "xt infer --help imported torch"
    missing = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "xt_engine.cli",
            "infer",
            "/no/such.tif",
            "--model",
            "xt_demo_sar",
            "--out",
            "/no/such.zarr",
        ],
        capture_output=True,
        text=True,
    )  # a wrong input path answers before the model (and torch) is loaded
    said = [line for line in missing.stderr.splitlines() if not line.startswith("import time")]
    assert missing.returncode == 2 and said == [
        "xt infer: error: image /no/such.tif does not exist (fix: check the path)"
    ]
    assert "torch" not in {line.split("|")[-1].strip() for line in missing.stderr.splitlines()}

    import pytest

    import xt_engine
    import xt_engine.runtime

    for package in (xt_engine, xt_engine.runtime):
        for name in package.__all__:
            assert getattr(package, name) is not None, name
        assert set(package.__all__) <= set(dir(package))
        assert set(package.__all__) - {"__version__"} == set(package._HOMES)
        with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
            package.nonexistent  # noqa: B018
    from xt_engine import run_inference
    from xt_engine.runtime.inference import run_inference as defined

    assert run_inference is defined
