from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from xt_engine.cli import main


def _xt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xt_engine.cli", *args], capture_output=True,
                          text=True)


def test_help_lists_the_commands() -> None:
    result = _xt("--help")
    assert result.returncode == 0
    for command in ("demo", "info", "infer", "models"):
        assert command in result.stdout


def test_models_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "xt_demo_sar" in out and "test_convnext_txl" in out


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = _xt("info", str(tmp_path / "missing.tif"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = _xt("infer", str(tmp_path / "missing.tif"), "--model", "nope", "--out", "x.zarr")
    assert result.returncode == 2 and "registered model" in result.stderr


def test_demo_writes_zarr_png_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--size", "512", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for field in ("image", "regions", "seconds", "regions/s", "peak memory"):
        assert field in out
    assert "16 of 128 px" in out
    root = zarr.open_group(str(tmp_path / "result.zarr"), mode="r")
    assert root.attrs["xt"]["complete"] is True
    labels = root["labels/segmentation/0"][:]
    assert labels.shape == (512, 512) and labels.max() < 4
    png = np.asarray(Image.open(tmp_path / "overview.png"))
    assert png.shape == (512, 512, 3) and png.std() > 5


def test_info_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import tifffile

    path = tmp_path / "gray.tif"
    tifffile.imwrite(path, np.zeros((40, 30), np.uint16))
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["levels"] == [[40, 30]] and info["dtype"] == "uint16" and info["channels"] == 1
