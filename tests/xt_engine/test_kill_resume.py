"""kill -9 at several moments, then --resume: the uninterrupted result, and a store that never
looks complete before it is."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr


def _done(out: Path) -> int:
    try:
        return int(np.asarray(zarr.open_group(str(out), mode="r")["xt_done"][:]).sum())
    except Exception:  # noqa: BLE001 - the store may not exist yet
        return -1


@pytest.mark.slow
def test_kill_9_at_several_moments_then_resume_equals_the_uninterrupted_run(
    tmp_path: Path,
) -> None:
    image = tmp_path / "scene.tif"
    pixels = np.random.default_rng(0).integers(0, 255, (2048, 2048), np.uint8)
    tifffile.imwrite(image, pixels, tile=(256, 256))
    base = [sys.executable, "-m", "xt_engine.cli", "infer", str(image), "--model", "xt_demo_sar"]
    whole = tmp_path / "whole.zarr"
    subprocess.run([*base, "--out", str(whole)], check=True, capture_output=True, timeout=600)
    expected = zarr.open_group(str(whole), mode="r")
    levels = len([k for k in expected["labels/segmentation"].keys() if k.isdigit()])
    # moments: in the context-only first pass (nothing written), early and late in the second
    moments = [
        lambda out: bool(list(out.glob("xt-token-cache-*"))),  # first pass under way
        lambda out: _done(out) >= 1,
        lambda out: _done(out) >= 180,
    ]
    for moment, reached in enumerate(moments):
        out = tmp_path / f"killed-{moment}.zarr"
        proc = subprocess.Popen(
            [*base, "--out", str(out), "--batch-size", "4"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not reached(out):
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be killed (machine too fast)")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        root = zarr.open_group(str(out), mode="r")
        assert root.attrs["xt"]["complete"] is False
        result = subprocess.run(
            [*base, "--out", str(out), "--resume", "--batch-size", "16"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        resumed = zarr.open_group(str(out), mode="r")
        assert resumed.attrs["xt"]["complete"] is True
        assert not list(out.glob("xt-token-cache-*"))
        for k in range(levels):
            np.testing.assert_array_equal(
                resumed[f"labels/segmentation/{k}"][:],
                expected[f"labels/segmentation/{k}"][:],
                err_msg=f"moment {moment}, level {k}",
            )
