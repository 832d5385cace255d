"""Repository-level gates: ruff and mypy clean, strict registered markers, a valid npe2
manifest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make test`, which installs the dev extra")
    return found


def test_ruff_clean() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", "src", "tests", "benchmarks", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    """mypy over src/ (the [tool.mypy] settings in pyproject.toml) reports no error."""
    result = subprocess.run(
        [_tool("mypy"), "src"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


def test_markers_registered_and_strict(pytestconfig: pytest.Config) -> None:
    markers = " ".join(pytestconfig.getini("markers"))
    for name in ("gui", "slow", "gpu"):
        assert f"{name}:" in markers
    assert "--strict-markers" in pytestconfig.getini("addopts")


def test_own_warnings_are_errors(pytestconfig: pytest.Config) -> None:
    filters = pytestconfig.getini("filterwarnings")
    assert "error:::xt_engine" in filters and "error:::napari_xt" in filters


def test_npe2_manifest_validates() -> None:
    result = subprocess.run(
        [_tool("npe2"), "validate", "napari-xt"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_manifest_is_shipped_inside_the_package() -> None:
    from importlib.resources import files

    shipped = files("napari_xt").joinpath("napari.yaml").read_text()
    assert shipped == (ROOT / "napari.yaml").read_text()
