"""The dock widget end to end under Xvfb: docked from the manifest, run, labels checked, screenshot."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xt_engine import RegionDone, run_inference
from xt_engine.weights.loading import load_model

pytestmark = pytest.mark.gui


def _dock(viewer, qtbot=None):
    """The docked widget; with ``qtbot``, once its first model has loaded (it loads in a worker,
    and its summary may reflow the dock, so the canvas size is final only then)."""
    from napari_xt._widget import XTInferenceWidget

    _, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    assert isinstance(widget, XTInferenceWidget)
    if qtbot is not None:
        qtbot.waitUntil(lambda: not widget.model_loading, timeout=60_000)
        qtbot.wait(50)  # the dock's layout settles
    return widget


def _expected_labels(image, spec: str, batch_size: int, **kwargs) -> np.ndarray:
    shape = image[0].shape if isinstance(image, list) else image.shape
    level = kwargs.get("level", 0)
    if isinstance(image, list):
        shape = image[level].shape
    out = np.zeros(shape[:2], np.uint8)
    for event in run_inference(image, load_model(spec), batch_size=batch_size, **kwargs):
        if isinstance(event, RegionDone):
            r = event.region
            out[r.y0 : r.y1, r.x0 : r.x1] = event.labels
    return out


def _run(widget, qtbot, timeout: int = 120_000) -> bool:
    with qtbot.waitSignal(widget.run_finished, timeout=timeout) as blocker:
        widget.run_button.click()
    return blocker.args[0]


def _labels_level0(layer) -> np.ndarray:
    data = layer.data[0] if layer.multiscale else layer.data
    return np.asarray(data[:])


def test_widget_runs_and_paints_labels(
    make_napari_viewer, qtbot, artifacts_dir: Path, results_folder: Path
) -> None:
    from napari_xt._sample_data import sar_scene

    viewer = make_napari_viewer(show=True)
    image, truth = sar_scene(size=512, seed=3)[:2]
    viewer.add_image(image[0], **image[1])
    widget = _dock(viewer)
    assert widget.image_combo.currentText() == "synthetic SAR scene"
    assert widget.model_combo.currentText() == "xt_demo_sar"
    qtbot.waitUntil(lambda: "test_convnext" in widget.model_summary.text())  # loads in a worker
    widget.scope_combo.setCurrentText("Whole image")
    widget.batch_spin.setValue(4)

    assert _run(widget, qtbot) is False
    labels = viewer.layers["xT segmentation"]
    np.testing.assert_array_equal(
        _labels_level0(labels), _expected_labels(image[0], "xt_demo_sar", 4)
    )
    assert labels.features["class"].tolist()[:2] == ["background", "land"]
    assert labels.visible  # inserted hidden, shown with the first painted results
    assert widget.progress.value() == widget.progress.maximum() == 16  # 512 px / 128 px regions
    assert widget.status.text().startswith("Done: 16/16 regions")
    first_store = widget.results.store

    # running again reuses the layer and writes a new store (the first one is kept); with attention
    widget.attention_check.setChecked(True)
    assert _run(widget, qtbot) is False
    heat = viewer.layers["xT attention"]
    assert heat.data.shape == (16, 16)  # one pixel per token: 512 px / stride 32
    assert (heat.data > 0).mean() > 0.9 and heat.contrast_limits[1] == pytest.approx(
        heat.data.max()
    )
    np.testing.assert_allclose(heat.scale[-2:], [32, 32])
    assert [layer.name for layer in viewer.layers].count("xT segmentation") == 1
    # the plugin's viewer hands out proxied layers and the widget keeps them so: its preview
    # took napari's public redraw path (see napari_xt._napari_private)
    assert hasattr(widget.results.labels, "__wrapped__") and not widget.results._partial
    np.testing.assert_array_equal(  # the re-run reused the texture; it shows the new result
        labels._slice.image.view, labels.colormap._data_to_texture(labels.data)
    )
    assert widget.results.store != first_store and first_store.exists()
    assert widget.results.store.parent == first_store.parent == results_folder

    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(
        artifacts_dir / "widget_after_run.png"
    )
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert canvas.std() > 10, "canvas screenshot is blank"
    colourful = np.abs(canvas - canvas.mean(axis=2, keepdims=True)).max(axis=2) > 20
    assert colourful.mean() > 0.05, "no overlay colours in the canvas"


def test_overlap_runs_overlap_tile_inference(make_napari_viewer, qtbot) -> None:
    from napari_xt._sample_data import sar_scene

    viewer = make_napari_viewer(show=True)
    image = sar_scene(size=384, seed=4)[0]
    viewer.add_image(image[0], **image[1])
    widget = _dock(viewer)
    widget.scope_combo.setCurrentText("Whole image")
    widget.batch_spin.setValue(4)
    widget.overlap_spin.setValue(16)  # 128 px regions output 96 px tiles: 4 x 4 regions
    assert _run(widget, qtbot) is False
    assert widget.progress.maximum() == 16
    labels = _labels_level0(viewer.layers["xT segmentation"])
    expected = _expected_labels(image[0], "xt_demo_sar", 4, overlap=16)
    np.testing.assert_array_equal(labels, expected)
    assert not np.array_equal(expected, _expected_labels(image[0], "xt_demo_sar", 4))

    widget.overlap_spin.setValue(8)  # off the token grid: the engine's message, nothing left
    assert _run(widget, qtbot) is True
    assert "multiple of 16 px" in widget.status.text()


def test_painted_blocks_reach_the_displayed_texture(make_napari_viewer) -> None:
    """Partial texture updates (no full refresh): what napari draws equals the painted data."""
    from napari_xt._results import SEGMENTATION_LAYER, RunLayers
    from xt_engine.io import source_from_arrays
    from xt_engine.tiling import RegionGrid

    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(
        np.full((256, 384), 128, np.uint8), name="scene", contrast_limits=(0, 255)
    )
    model = load_model("xt_demo_sar")
    source = source_from_arrays([image.data], rgb=False, name="scene")
    layers = RunLayers(viewer)
    layers.start(image, source, 0, Path("unused.zarr"), model, attention=False)
    labels = viewer.layers[SEGMENTATION_LAYER]
    grid = RegionGrid.for_image((256, 384), 128)
    viewer.reset_view()
    viewer.screenshot(canvas_only=True, flash=False)  # draw: the empty texture is on the GPU
    assert not labels.visible  # inserted hidden: its first draw waits for results
    layers.paint(RegionDone(grid.region(0), np.full((128, 128), 1, np.uint8)))
    layers.refresh()  # shows the layer (a whole redraw)
    assert labels.visible
    layers._refreshed = 0.0  # as if the 5 Hz redraw interval had passed
    layers.paint(RegionDone(grid.region(4), np.full((128, 128), 2, np.uint8)))
    layers.refresh()  # uploads only the new block
    assert layers._partial, "this napari lacks the partial-update hooks"
    view = labels._slice.image.view
    np.testing.assert_array_equal(view, labels.colormap._data_to_texture(labels.data))
    assert (labels.data[:128, :128] == 1).all() and (labels.data[128:, 128:256] == 2).all()
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    coloured = np.abs(canvas - canvas.mean(axis=2, keepdims=True)).max(axis=2) > 20
    lit = canvas.max(axis=2) > 40  # the grey image's footprint on the black canvas
    assert 0.1 < coloured.sum() / max(lit.sum(), 1) < 0.6  # 2 of 6 regions show on screen


def test_current_view_on_a_multiscale_image(make_napari_viewer, qtbot, artifacts_dir: Path) -> None:
    from xt_engine.synthetic import make_sar_scene

    image, _ = make_sar_scene((1024, 1024), seed=5)
    pyramid = [image, image[::2, ::2].copy(), image[::4, ::4].copy()]
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(pyramid, multiscale=True, name="pyramid", colormap="gray")
    widget = _dock(viewer, qtbot)
    assert widget.level_combo.count() == 4  # auto + 3 levels
    # look at the top-left quarter at full resolution (at least one screen pixel per pixel: the
    # canvas beside the dock may be narrower than 512 px)
    viewer.scene.camera.center = (256, 256)
    viewer.scene.camera.zoom = max(1.0, min(viewer.canvas.size) / 512)
    from napari_xt._view import auto_level, view_box
    from xt_engine.io import source_from_arrays

    source = source_from_arrays(pyramid)
    assert auto_level(viewer, layer, source) == 0
    box = view_box(viewer, layer, (1024, 1024))
    h, w = viewer.canvas.size
    zoom = viewer.scene.camera.zoom
    assert box[:2] == (max(0, int(256 - h / zoom / 2)), max(0, int(256 - w / zoom / 2)))
    assert abs(box[2] - (256 + h / zoom / 2)) <= 2 and abs(box[3] - (256 + w / zoom / 2)) <= 2

    assert _run(widget, qtbot) is False
    labels = _labels_level0(viewer.layers["xT segmentation"])
    assert labels.shape == (1024, 1024)
    expected = _expected_labels(pyramid, "xt_demo_sar", 8, roi=box)
    np.testing.assert_array_equal(labels[: box[2], : box[3]], expected[: box[2], : box[3]])
    assert labels[box[2] + 128 :, :].max() == 0 and labels[:, box[3] + 128 :].max() == 0

    # level 1 chosen by hand: results at half resolution, placed over the image
    widget.level_combo.setCurrentIndex(2)
    assert widget.level_combo.currentText().startswith("1: 512")
    widget.scope_combo.setCurrentText("Whole image")
    assert _run(widget, qtbot) is False
    seg = viewer.layers["xT segmentation"]
    assert _labels_level0(seg).shape == (512, 512)
    np.testing.assert_allclose(seg.scale[-2:], [2, 2])
    np.testing.assert_array_equal(
        _labels_level0(seg), _expected_labels(pyramid, "xt_demo_sar", 8, level=1)
    )
    assert widget.level_combo.currentText().startswith("1: 512")  # kept across layer changes
    viewer.reset_view()
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(
        artifacts_dir / "widget_multiscale_level1.png"
    )


def test_cancel_keeps_what_is_done_and_the_viewer_stays_responsive(
    make_napari_viewer, qtbot
) -> None:
    from qtpy.QtCore import QTimer

    from xt_engine.synthetic import make_sar_scene

    image, _ = make_sar_scene((1536, 1536), seed=7)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="scene")
    widget = _dock(viewer)
    widget.scope_combo.setCurrentText("Whole image")
    widget.batch_spin.setValue(4)

    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(10)
    cancelled_at: list[int] = []

    def cancel_once(value: int) -> None:
        if value >= 40 and not cancelled_at:
            cancelled_at.append(value)
            widget.cancel_button.click()

    widget.progress.valueChanged.connect(cancel_once)
    set_up: list[float] = []  # when the Started event's layers are made
    start_layers = widget.results.start

    def timed_start(*args, **kwargs) -> list:
        steps = start_layers(*args, **kwargs)
        set_up.append(time.perf_counter())
        return steps

    widget.results.start = timed_start
    assert _run(widget, qtbot) is True
    timer.stop()
    assert widget.status.text().startswith("Cancelled")
    done = widget.progress.value()
    assert 40 <= done < 144
    labels = _labels_level0(viewer.layers["xT segmentation"])
    assert labels[:128].any()  # the first rows of regions are kept
    assert labels[-128:].max() == 0  # the last ones were never run
    # from the moment the run's layers exist (napari's insertion of a new Labels layer is one
    # 80-100 ms turn, before which the engine's compute waits) through both passes, the first
    # reveal and the cancel, the event loop never stalls: on a quiet 2-core host every gap of a
    # 10 ms heartbeat stays under 100 ms (the docked widget redraws through napari's public
    # full refresh); a CPU-bound neighbour can stretch one turn past that, so one gap may reach
    # 250 ms, while a blocked viewer (a model load or compute on this thread) shows far more
    beats_array = np.asarray(beats)
    gaps = np.sort(np.diff(beats_array)[beats_array[:-1] >= set_up[0]])
    assert len(gaps) > 10
    assert gaps[-1] < 0.25, f"event loop blocked for {gaps[-1] * 1000:.0f} ms"
    assert gaps[-2] < 0.1, f"event loop stalled twice, {gaps[-2] * 1000:.0f} ms the second time"
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_channel_mismatch_shows_the_engine_message(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((128, 128, 3), np.uint8), rgb=True, name="rgb")
    widget = _dock(viewer)
    assert _run(widget, qtbot) is True  # the engine's check runs in the worker
    assert "channel(s) but the model takes 1" in widget.status.text()
    assert widget.run_button.isEnabled()
    assert "xT segmentation" not in viewer.layers  # nothing half-made is left behind


def test_detection_model_adds_points(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    import torch

    from xt_engine import create_model, save_checkpoint

    model = create_model("test_convnext_txl_det")
    with torch.no_grad():
        model.head.heatmap.weight.zero_()
        model.head.heatmap.bias.copy_(torch.tensor([-9.0, 6.0, -9.0]))  # class 1 everywhere
    checkpoint = save_checkpoint(model, tmp_path / "det.safetensors")
    image = np.random.default_rng(0).integers(0, 255, (128, 192, 3), np.uint8)
    from xt_engine import RegionDone, run_inference

    engine = [e for e in run_inference(image, model) if isinstance(e, RegionDone)]
    expected = sum(len(e.detections) for e in engine)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, rgb=True, name="rgb")
    widget = _dock(viewer)
    widget.model_combo.addItem(str(checkpoint))
    widget.model_combo.setCurrentText(str(checkpoint))
    widget.scope_combo.setCurrentText("Whole image")
    assert _run(widget, qtbot) is False, widget.status.text()
    assert "xT detections" in viewer.layers, (widget.status.text(), [x.name for x in viewer.layers])
    points = viewer.layers["xT detections"]
    # 6 regions, the best 100 centres of each, less those a neighbour reported across a border
    assert len(points.data) == expected and 500 < expected < 6 * 100
    assert set(points.features["class"]) == {"class_1"}
    assert points.data[:, 0].max() < 128 and points.data[:, 1].max() < 192
    assert "xT segmentation" not in viewer.layers


def test_classification_model_reports_the_image_class(
    make_napari_viewer, qtbot, tmp_path: Path
) -> None:
    import torch

    from xt_engine import create_model, save_checkpoint

    model = create_model("test_convnext_txl_cls")
    with torch.no_grad():
        model.head.cls[1].weight.zero_()
        model.head.cls[1].bias.copy_(torch.tensor([0.0, 3.0, 0.0]))  # class_1, p = 0.91
    checkpoint = save_checkpoint(model, tmp_path / "cls.safetensors")
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((128, 192, 3), np.uint8), rgb=True, name="rgb")
    widget = _dock(viewer)
    widget.model_combo.addItem(str(checkpoint))
    widget.model_combo.setCurrentText(str(checkpoint))
    widget.scope_combo.setCurrentText("Whole image")
    assert _run(widget, qtbot) is False, widget.status.text()
    assert "image class class_1 (p = 0.91)" in widget.status.text()
    assert "xT segmentation" not in viewer.layers


def test_scope_from_a_shapes_layer(make_napari_viewer, qtbot) -> None:
    from xt_engine.synthetic import make_sar_scene

    image, _ = make_sar_scene((512, 512), seed=11)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="scene")
    widget = _dock(viewer)
    viewer.add_shapes([np.array([[100, 150], [300, 400]])], shape_type="rectangle", name="roi")
    assert widget.scope_combo.findText("Shapes: roi") >= 0  # follows the layer list
    widget.scope_combo.setCurrentText("Shapes: roi")
    widget.image_combo.setCurrentText("scene")
    assert _run(widget, qtbot) is False
    labels = _labels_level0(viewer.layers["xT segmentation"])
    expected = _expected_labels(image, "xt_demo_sar", 8, roi=(100, 150, 301, 401))
    np.testing.assert_array_equal(labels, expected)
    assert labels[:100].max() == 0 and labels[:, :150].max() == 0 and labels[301:].max() == 0
    viewer.layers["roi"].data = []
    widget.run_button.click()
    assert "has no shape over the image" in widget.status.text()


def test_architecture_with_separate_weight_files(make_napari_viewer, qtbot, split_weights) -> None:
    import torch

    from xt_engine import create_model

    torch.manual_seed(9)
    source = create_model("test_convnext_txl").eval()
    backbone, rest = split_weights(source)
    image = np.random.default_rng(2).integers(0, 255, (100, 130, 3), np.uint8)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, rgb=True, name="rgb")
    widget = _dock(viewer)
    widget.model_combo.addItem("test_convnext_txl")  # contract toys are not listed
    widget.model_combo.setCurrentText("test_convnext_txl")
    widget.set_weights("region", str(backbone))
    widget.set_weights("context", str(rest))
    qtbot.waitUntil(lambda: "backbone.safetensors, rest.pth" in widget.model_summary.text())
    widget.scope_combo.setCurrentText("Whole image")
    assert _run(widget, qtbot) is False
    expected = np.zeros((100, 130), np.uint8)
    for event in run_inference(image, source, batch_size=8):
        if isinstance(event, RegionDone):
            r = event.region
            expected[r.y0 : r.y1, r.x0 : r.x1] = event.labels
    np.testing.assert_array_equal(_labels_level0(viewer.layers["xT segmentation"]), expected)


def test_click_to_inspect_attention(make_napari_viewer, qtbot) -> None:
    from xt_engine.synthetic import make_sar_scene

    image, _ = make_sar_scene((512, 512), seed=12)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="scene", scale=(2.0, 2.0))  # world units differ from pixels
    widget = _dock(viewer)
    assert not widget.inspector.button.isEnabled()  # nothing to inspect before a run
    widget.scope_combo.setCurrentText("Whole image")
    assert _run(widget, qtbot) is False
    widget.inspector.button.setChecked(True)
    assert widget.inspector._on_click in viewer.mouse_drag_callbacks
    # world (600, 300) -> pixel (300, 150) -> region row 2, col 1 of the 4 x 4 grid
    assert widget.inspector.region_at((600.0, 300.0)) == 9
    assert widget.inspector.region_at((2000.0, 10.0)) is None
    widget.inspector.inspect_at((600.0, 300.0))
    qtbot.waitUntil(lambda: "xT region attention" in viewer.layers, timeout=60_000)
    heat = viewer.layers["xT region attention"]
    assert heat.data.shape == (16, 16) and heat.data.sum() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(heat.scale[-2:], [64, 64])  # 32 px tokens x 2 world units
    assert widget.status.text().startswith("Attention of region 9")
    widget.inspector.button.setChecked(False)
    assert widget.inspector._on_click not in viewer.mouse_drag_callbacks


def test_untrained_architectures_sit_in_a_labelled_section_and_need_weights(
    make_napari_viewer, qtbot
) -> None:
    from napari_xt._models import UNTRAINED_HEADER

    viewer = make_napari_viewer()
    widget = _dock(viewer)
    combo = widget.model_combo
    items = [combo.itemText(i) for i in range(combo.count())]
    assert items[0] == "xt_demo_sar" and combo.currentText() == "xt_demo_sar"
    assert not any(name.startswith("test_") for name in items)
    header = items.index(UNTRAINED_HEADER)
    assert "xt_swinv2_tiny_txl" in items[header + 1 :]
    assert not combo.model().item(header).isEnabled()
    combo.setCurrentText("xt_swinv2_tiny_txl")
    qtbot.waitUntil(lambda: "without trained weights" in widget.model_summary.text())


def test_precision_tooltip_names_slow_bf16_on_this_cpu(
    make_napari_viewer, qtbot, monkeypatch
) -> None:
    from xt_engine.runtime import precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    slow = _dock(make_napari_viewer(), qtbot).precision_combo.toolTip()  # (model loaded)
    assert "bf16 runs emulated" in slow and "--precision fp32" in slow
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    fast = _dock(make_napari_viewer(), qtbot).precision_combo.toolTip()  # a new dock
    assert "emulated" not in fast and fast.startswith("auto: bf16/fp16 autocast on CUDA")


def test_a_dock_closed_while_its_model_loads_drops_the_result(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    picker = widget.model_picker
    assert picker.loading  # the default model loads in a worker
    with qtbot.waitSignal(picker.summary.destroyed, timeout=10_000):
        viewer.window.remove_dock_widget(dock)
        widget.deleteLater()
    # pytest-qt fails the test on an exception in a slot: before the fix, the finished load set
    # the text of the deleted summary label ("wrapped C/C++ object ... has been deleted")
    qtbot.waitUntil(lambda: not picker.loading, timeout=60_000)
    qtbot.wait(50)
    assert picker.models.model is None  # dropped, not accepted into the gone widget
