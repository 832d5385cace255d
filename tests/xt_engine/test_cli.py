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
    return subprocess.run(
        [sys.executable, "-m", "xt_engine.cli", *args], capture_output=True, text=True
    )


def test_help_lists_the_commands() -> None:
    result = _xt("--help")
    assert result.returncode == 0
    for command in ("demo", "info", "infer", "models"):
        assert command in result.stdout


def test_models_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "xt_demo_sar" in out and "test_convnext_txl" not in out and "UNTRAINED" in out


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = _xt("info", str(tmp_path / "missing.tif"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = _xt("infer", str(tmp_path / "missing.tif"), "--model", "nope", "--out", "x.zarr")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_demo_writes_zarr_png_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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


@pytest.fixture
def small_tiff(tmp_path: Path) -> Path:
    import tifffile

    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (300, 200), dtype=np.uint8))
    return path


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], needle: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_infer_writes_a_complete_store_for_a_level0_roi(
    small_tiff: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.zarr"
    assert (
        main(
            [
                "infer",
                str(small_tiff),
                "--model",
                "xt_demo_sar",
                "--out",
                str(out),
                "--attention",
                "--roi",
                "10",
                "20",
                "150",
                "180",
            ]
        )
        == 0
    )
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["xt"]["complete"] is True and root.attrs["xt"]["roi"] == [10, 20, 150, 180]
    assert root["attention/0"].shape == (10, 7)  # 300 x 200 px at one pixel per 32 px token
    assert "regions/s" in capsys.readouterr().out
    assert root.attrs["xt"]["cpu_denormals"] == "flush"  # the default on the CPU


def test_keep_denormals_reaches_the_run(small_tiff: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept.zarr"
    args = ["infer", str(small_tiff), "--model", "xt_demo_sar", "--out", str(out)]
    assert main([*args, "--keep-denormals"]) == 0
    assert zarr.open_group(str(out), mode="r").attrs["xt"]["cpu_denormals"] == "keep"


def test_infer_bad_inputs_exit_2_with_the_fix(
    small_tiff: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tifffile

    out = str(tmp_path / "o.zarr")
    infer = ["infer", "--model", "xt_demo_sar", "--out", out]
    _fails([*infer, str(tmp_path / "missing.tif")], capsys, "does not exist")
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image")
    _fails([*infer, str(text)], capsys, "notes.tif")
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, np.zeros((512, 512), np.uint8), tile=(128, 128), compression="zlib")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    _fails([*infer, str(cut)], capsys, "cut.tif")
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8))
    _fails([*infer, str(rgb)], capsys, "model expects 1 input channel, rgb.tif has 3")
    _fails([*infer, str(small_tiff), "--roi", "0", "0", "400", "10"], capsys, "outside the image")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails(
        ["infer", str(small_tiff), "--model", "xt_demo_sar", "--out", str(blocker / "o.zarr")],
        capsys,
        "cannot write to",
    )
    fake = tmp_path / "weights.safetensors"
    fake.write_text("nope")
    _fails(
        ["infer", str(small_tiff), "--model", str(fake), "--out", out],
        capsys,
        "not a napari-xt checkpoint",
    )
    _fails([*infer, str(small_tiff), "--quantize", "int8"], capsys, "add --compile")
    assert not (tmp_path / "o.zarr").exists()  # nothing half-written that looks complete


def test_ctrl_c_exits_130_and_resume_completes(tmp_path: Path) -> None:
    import signal
    import time

    import tifffile

    image = tmp_path / "big.tif"
    tifffile.imwrite(
        image, np.random.default_rng(0).integers(0, 255, (3072, 3072), np.uint8), tile=(256, 256)
    )
    out = tmp_path / "big.zarr"
    cmd = [
        sys.executable,
        "-m",
        "xt_engine.cli",
        "infer",
        str(image),
        "--model",
        "xt_demo_sar",
        "--out",
        str(out),
        "--batch-size",
        "4",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until regions are being written
        if (out / "xt_done" / "c").exists() or (out / "xt_done" / "c" / "0").exists():
            break
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["xt"]["complete"] is False
    assert root.attrs["xt"]["checkpoint_sha256"]
    result = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert zarr.open_group(str(out), mode="r").attrs["xt"]["complete"] is True


def test_bad_device_and_demo_size_exit_2_with_one_line(
    small_tiff: Path, tmp_path: Path, capsys
) -> None:
    out = str(tmp_path / "o.zarr")
    for args in (
        ["infer", str(small_tiff), "--model", "xt_demo_sar", "--out", out, "--device", "tpu"],
        ["infer", str(small_tiff), "--model", "xt_demo_sar", "--out", out, "--device", "cpu:1"],
        ["demo", "--size", "0", "--out", str(tmp_path / "demo")],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "fix:" in err[0], err
