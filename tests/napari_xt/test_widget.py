"""The dock widget end to end under Xvfb: docked from the manifest, run, labels checked, screenshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xt_engine import RegionDone, run_inference
from xt_engine.loading import load_model

pytestmark = pytest.mark.gui


def _dock(viewer):
    from napari_xt._widget import XTInferenceWidget

    _, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    assert isinstance(widget, XTInferenceWidget)
    return widget


def _expected_labels(image: np.ndarray, spec: str, batch_size: int) -> np.ndarray:
    out = np.zeros(image.shape[:2], np.uint8)
    for event in run_inference(image, load_model(spec), batch_size=batch_size):
        if isinstance(event, RegionDone):
            r = event.region
            out[r.y0 : r.y1, r.x0 : r.x1] = event.labels
    return out


def test_widget_runs_and_paints_labels(make_napari_viewer, qtbot, artifacts_dir: Path) -> None:
    from napari_xt._sample_data import sar_scene

    viewer = make_napari_viewer(show=True)
    image, truth = sar_scene(size=512, seed=3)[:2]
    viewer.add_image(image[0], **image[1])
    widget = _dock(viewer)
    assert widget.image_combo.currentText() == "synthetic SAR scene"
    assert widget.model_combo.currentText() == "xt_demo_sar"
    assert "test_convnext" in widget.model_summary.text()
    widget.batch_spin.setValue(4)

    with qtbot.waitSignal(widget.run_finished, timeout=60_000) as blocker:
        widget.run_button.click()
    assert blocker.args == [False]
    labels = viewer.layers["xT segmentation"]
    np.testing.assert_array_equal(labels.data, _expected_labels(image[0], "xt_demo_sar", 4))
    assert labels.features["class"].tolist()[:2] == ["background", "land"]
    assert widget.progress.value() == widget.progress.maximum() == 16  # 512 px / 128 px regions
    assert widget.status.text().startswith("Done: 16/16 regions")

    # running again replaces the layer's content instead of adding another layer
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        widget.run_button.click()
    assert [layer.name for layer in viewer.layers].count("xT segmentation") == 1

    shot = viewer.screenshot(canvas_only=False, flash=False)
    path = artifacts_dir / "widget_after_run.png"
    Image.fromarray(shot).save(path)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert canvas[..., :3].std() > 10, "canvas screenshot is blank"
    # the overlay colours are present: the demo palette's land colour is brown-orange
    assert (np.abs(canvas[..., :3].astype(int) - canvas[..., :3].mean(axis=2, keepdims=True)) > 20).any()


def test_channel_mismatch_shows_the_engine_message(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((128, 128, 3), np.uint8), rgb=True, name="rgb")
    widget = _dock(viewer)
    widget.run_button.click()
    assert "channel(s) but the model takes 1" in widget.status.text()
    assert widget.run_button.isEnabled()
    assert "xT segmentation" not in viewer.layers  # nothing half-made is left behind
