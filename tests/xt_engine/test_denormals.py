"""Denormals flushed on every compute thread during a run, and only then (runtime/denormals)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from xt_engine import RegionDone, run_inference
from xt_engine.export.result import open_result
from xt_engine.runtime import denormals
from xt_engine.runtime.denormals import flush_denormals, flushing, flushing_share
from xt_engine.synthetic import make_sar_scene
from xt_engine.weights.loading import load_model


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Two intra-op threads whose OpenMP team exists before the test (a parallel op ran)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.full((4 * denormals.GRAIN,), 1.0).mul_(2.0)  # the team is created, mode off
    torch.set_flush_denormal(False)
    assert flushing_share() == 0.0
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(before)


def test_torch_alone_reaches_only_the_calling_thread(two_threads: None) -> None:
    """Why the module exists: ``torch.set_flush_denormal`` misses the existing workers."""
    assert torch.set_flush_denormal(True)
    assert 0.0 < flushing_share() < 1.0
    torch.set_flush_denormal(False)


def test_every_thread_flushes_inside_and_none_after(two_threads: None) -> None:
    with flush_denormals() as flushed:
        assert flushed
        assert flushing_share() == 1.0
    assert flushing_share() == 0.0
    with flush_denormals(enabled=False) as flushed:
        assert not flushed
        assert flushing_share() == 0.0


def test_the_callers_own_mode_is_kept(two_threads: None) -> None:
    torch.set_flush_denormal(True)  # the host flushes on its own thread
    with flush_denormals():
        assert flushing_share() == 1.0
    assert denormals._flushes_here()
    assert 0.0 < flushing_share() < 1.0  # its workers as they were


def test_each_step_flushes_and_the_consumer_between_steps_does_not(two_threads: None) -> None:
    def steps() -> Iterator[float]:
        for _ in range(3):
            yield flushing_share()

    seen = []
    for share in flushing(steps()):
        seen.append((share, denormals._flushes_here()))
    assert seen == [(1.0, False)] * 3  # the consumer's own thread: its mode between steps
    assert flushing_share() == 0.0  # the workers too once the iteration ended


def test_a_step_that_raises_or_a_closed_iteration_restores_the_threads(two_threads: None) -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(flushing(failing()))
    assert flushing_share() == 0.0
    closed = flushing(iter(range(5)))
    assert next(closed) == 0
    closed.close()  # type: ignore[attr-defined]
    assert flushing_share() == 0.0


def _run(image: np.ndarray, flush: bool, output: Path | None = None) -> tuple[np.ndarray, float]:
    """Labels of the demo model and the flushing share its region encoder computed in."""
    model = load_model("xt_demo_sar")
    shares: list[float] = []
    hook = model.region_encoder.register_forward_hook(lambda *_: shares.append(flushing_share()))
    labels = np.zeros(image.shape, np.uint8)
    try:
        for event in run_inference(
            image, model, batch_size=4, foreground="none", flush_denormal=flush, output=output
        ):
            if isinstance(event, RegionDone) and event.labels is not None:
                r = event.region
                labels[r.y0 : r.y0 + r.height, r.x0 : r.x0 + r.width] = event.labels
    finally:
        hook.remove()
    assert len(set(shares)) == 1
    return labels, shares[0]


def test_a_flushed_run_gives_the_same_labels_and_records_it(
    two_threads: None, tmp_path: Path
) -> None:
    scene = make_sar_scene((384, 384), seed=5)[0]
    kept, kept_share = _run(scene, flush=False, output=tmp_path / "keep.ome.zarr")
    flushed, flushed_share = _run(scene, flush=True, output=tmp_path / "flush.ome.zarr")
    assert (kept_share, flushed_share) == (0.0, 1.0)
    assert len(np.unique(kept)) > 1  # the scene has vessels, land and sea: a real comparison
    np.testing.assert_array_equal(flushed, kept)
    assert flushing_share() == 0.0  # the run left the threads as it found them
    attrs = {
        name: open_result(tmp_path / f"{name}.ome.zarr").xt["cpu_denormals"]
        for name in ("keep", "flush")
    }
    assert attrs == {"keep": "keep", "flush": "flush"}


def test_a_run_left_open_at_interpreter_exit_ends() -> None:
    """A run's generator never closed is finalised while the interpreter shuts down; restoring
    the workers then must not wait for them (a Python callback on them deadlocked there)."""
    code = (
        "import builtins, torch\n"
        "torch.set_num_threads(2)\n"
        "from xt_engine.runtime.denormals import flushing\n"
        "steps = flushing(iter(range(3)))\n"
        "next(steps)\n"
        "torch.ones(1 << 20).mul_(2.0)\n"
        "builtins.left_open = steps\n"
    )
    result = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-500:]
