"""napari's GUI thread never runs a torch op: an OpenMP pool started there slows every later
run in a worker thread (see napari_xt._threads)."""

from __future__ import annotations

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

pytestmark = pytest.mark.gui


class RecordOps(TorchDispatchMode):
    """Records the aten (compute) ops run on this thread (the mode stack is thread-local);
    import-time checks such as ``torchvision._cuda_version`` are not compute."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.namespace == "aten":
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_sample_widget_and_run_leave_the_gui_thread_free_of_torch(
    make_napari_viewer, qtbot
) -> None:
    from napari_xt._threads import call_in_fresh_thread

    with RecordOps() as probe:  # the probe sees this thread only
        import torch

        torch.ones(3).sum()
        assert probe.ops, "the probe records ops on this thread"
        probe.ops.clear()
        call_in_fresh_thread(lambda: torch.ones(3).sum())
        assert probe.ops == []  # ... and not those of other threads

        viewer = make_napari_viewer(show=True)
        viewer.open_sample("napari-xt", "sar_scene")
        _, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
        widget.scope_combo.setCurrentText("Whole image")
        widget.image_combo.setCurrentText("synthetic SAR scene")
        with qtbot.waitSignal(widget.run_finished, timeout=120_000):
            widget.run_button.click()
    assert "xT segmentation" in viewer.layers
    assert probe.ops == [], f"torch ops on the GUI thread: {sorted(set(probe.ops))[:10]}"
