"""A real full disk: the store on a small tmpfs (mounted for the test; skipped where mounting is
not allowed, e.g. without root). The run ends with exit 2 and one line, the store stays
resumable, and once there is space `--resume` gives the uninterrupted result."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="tmpfs is Linux's")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs at tmp_path/disk, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:80]})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _xt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xt_engine.cli", *args], capture_output=True, text=True
    )


def test_a_full_tmpfs_ends_in_one_line_and_resumes_to_the_same_result(
    small_disk: Path, tmp_path: Path
) -> None:
    image = tmp_path / "scene.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (512, 512, 3), np.uint8))
    run = ["infer", str(image), "--model", "test_convnext_none", "--allow-untrained",
           "--probabilities", "--batch-size", "2"]
    full = _xt(*run, "--out", str(small_disk / "out.zarr"))
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device" in lines[0] and "--resume" in lines[0]
    xt = zarr.open_group(str(small_disk / "out.zarr"), mode="r").attrs["xt"]
    assert xt["complete"] is False  # never a half-written store that looks complete

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = _xt(*run, "--out", str(small_disk / "out.zarr"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole = _xt(*run, "--out", str(tmp_path / "whole.zarr"))
    assert whole.returncode == 0, whole.stderr
    a = zarr.open_group(str(small_disk / "out.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "whole.zarr"), mode="r")
    assert a.attrs["xt"]["complete"] is True
    for path in ("labels/segmentation/0", "labels/segmentation/1", "probabilities/0"):
        np.testing.assert_array_equal(a[path][:], b[path][:], err_msg=path)


def test_a_token_cache_that_cannot_fit_is_refused_before_the_run(
    small_disk: Path, tmp_path: Path
) -> None:
    image = tmp_path / "scene.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (2048, 2048, 3), np.uint8))
    out = tmp_path / "out.zarr"  # 1024 regions x 16 tokens x 32 dims x 4 B = 2 MiB of cache
    proc = _xt("infer", str(image), "--model", "test_convnext_txl_bidir", "--allow-untrained",
               "--out", str(out), "--cache-dir", str(small_disk))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "token cache needs" in lines[0] and "--cache-dir" in lines[0]
    assert os.listdir(small_disk) == []  # nothing left in the cache folder
