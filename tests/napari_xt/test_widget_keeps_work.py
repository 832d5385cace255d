"""The widget keeps the user's work and the viewer fluid: results outlive the session, a run
never deletes an earlier store, an interrupted run resumes, models load off the GUI thread, and
the attention inspector waits for runs and follows an overlap run's grid."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from xt_engine import RegionDone, run_inference
from xt_engine.store.result_store import LABELS_PATH
from xt_engine.store.safety import read_store_attrs
from xt_engine.weights.loading import load_model

pytestmark = pytest.mark.gui


def _dock(viewer, qtbot):
    _, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    qtbot.waitUntil(lambda: not widget.model_loading, timeout=60_000)
    widget.scope_combo.setCurrentText("Whole image")
    return widget


def _run(widget, qtbot, button=None) -> bool:
    with qtbot.waitSignal(widget.run_finished, timeout=180_000) as blocker:
        (button or widget.run_button).click()
    return blocker.args[0]


def _engine_labels(image: np.ndarray, model, batch_size: int = 8, **kwargs) -> np.ndarray:
    out = np.zeros(image.shape[:2], np.uint8)
    for event in run_inference(image, model, batch_size=batch_size, **kwargs):
        if isinstance(event, RegionDone):
            r = event.region
            out[r.y0 : r.y1, r.x0 : r.x1] = event.labels
    return out


def _store_labels(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")[f"{LABELS_PATH}/0"][:])


def _scene(size: int, seed: int) -> np.ndarray:
    from napari_xt._threads import call_in_fresh_thread
    from xt_engine.synthetic import make_sar_scene

    return call_in_fresh_thread(make_sar_scene, (size, size), seed=seed)[0]


@pytest.fixture(scope="module")
def swin_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the 29 M-parameter ``xt_swinv2_tiny_txl`` architecture (random weights)."""
    from napari_xt._threads import call_in_fresh_thread
    from xt_engine import create_model, save_checkpoint

    path = tmp_path_factory.mktemp("swin") / "swinv2_tiny.safetensors"
    call_in_fresh_thread(lambda: save_checkpoint(create_model("xt_swinv2_tiny_txl"), path))
    return path


def test_results_outlive_the_session(tmp_path: Path) -> None:
    """A napari process opens a TIFF, runs, closes and exits; its store stays, beside the image."""
    import tifffile

    image = _scene(256, seed=31)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, image)
    script = (
        "import sys, napari\n"
        "from qtpy.QtCore import QEventLoop, QTimer\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.open(sys.argv[1], plugin='napari-xt')\n"
        "_, widget = viewer.window.add_plugin_dock_widget('napari-xt', 'xT inference')\n"
        "widget.scope_combo.setCurrentText('Whole image')\n"
        "print('OUTPUT', widget.output_edit.text())\n"
        "loop, outcome = QEventLoop(), []\n"
        "widget.run_finished.connect(lambda cancelled: (outcome.append(cancelled), loop.quit()))\n"
        "QTimer.singleShot(0, widget.run_button.click)\n"
        "QTimer.singleShot(240_000, loop.quit)\n"
        "loop.exec()\n"
        "print('RESULT', outcome, widget.results.store, widget.status.text())\n"
        "widget.close()\n"
        "viewer.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"OUTPUT {tmp_path / 'scene-xt'}" in result.stdout
    assert "RESULT [False]" in result.stdout, result.stdout + result.stderr[-2000:]
    stores = sorted((tmp_path / "scene-xt").glob("run-*.zarr"))
    assert len(stores) == 1, list((tmp_path / "scene-xt").iterdir())
    xt = read_store_attrs(stores[0])
    assert xt is not None and xt["complete"]
    np.testing.assert_array_equal(
        _store_labels(stores[0]), _engine_labels(image, load_model("xt_demo_sar"))
    )


def test_a_cancelled_run_resumes_from_the_widget(make_napari_viewer, qtbot) -> None:
    image = _scene(1024, seed=21)  # 64 regions of 128 px
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="scene")
    widget = _dock(viewer, qtbot)
    widget.batch_spin.setValue(4)
    assert not widget.resume_button.isEnabled()  # nothing to resume yet
    painted: list[int] = []
    cancel = [True]
    paint = widget.results.paint

    def cancel_after_the_first(event: RegionDone) -> None:
        paint(event)
        painted.append(event.region.index)
        if cancel[0]:
            cancel[0] = False
            widget.cancel_button.click()

    widget.results.paint = cancel_after_the_first
    assert _run(widget, qtbot) is True
    store = widget.results.store
    xt = read_store_attrs(store)
    assert xt is not None and not xt["complete"]
    assert 0 < len(painted) < 64 and widget.resume_button.isEnabled()
    first = set(painted)

    painted.clear()
    widget.batch_spin.setValue(8)  # (changed controls do not change what Resume continues)
    assert _run(widget, qtbot, widget.resume_button) is False, widget.status.text()
    assert widget.results.store == store and read_store_attrs(store)["complete"]
    assert set(painted) == set(range(64)) - first  # only the missing regions were decoded
    expected = _engine_labels(image, load_model("xt_demo_sar"), batch_size=4)
    np.testing.assert_array_equal(_store_labels(store), expected)
    np.testing.assert_array_equal(np.asarray(viewer.layers["xT segmentation"].data), expected)
    assert not widget.resume_button.isEnabled()
    assert widget.status.text().startswith("Done")


def test_a_run_never_deletes_a_store_a_layer_shows(
    make_napari_viewer, qtbot, monkeypatch, results_folder: Path
) -> None:
    import napari_xt._results

    monkeypatch.setattr(napari_xt._results, "PREVIEW_MAX_SIDE", 256)  # results read from the store
    image = _scene(512, seed=22)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="scene")
    widget = _dock(viewer, qtbot)
    assert _run(widget, qtbot) is False
    first = widget.results.store
    shown = viewer.layers["xT segmentation"]
    assert shown.multiscale and first.parent == results_folder
    shown.name = "first result"  # the user keeps it
    before = np.asarray(shown.data[0][:])

    assert _run(widget, qtbot) is False
    second = widget.results.store
    assert second != first and first.exists() and read_store_attrs(first)["complete"]
    np.testing.assert_array_equal(np.asarray(viewer.layers["first result"].data[0][:]), before)
    assert _run(widget, qtbot) is False  # replaces the second run's layer, not its store
    assert second.exists() and read_store_attrs(second)["complete"]
    assert len(list(results_folder.glob("run-*.zarr"))) == 3


def test_the_output_folder_is_remembered(make_napari_viewer, qtbot, tmp_path, results_folder):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8), name="array")
    widget = _dock(viewer, qtbot)
    assert widget.output_edit.text() == str(results_folder)  # an image without a file
    widget.set_output_folder(tmp_path / "picked")
    again = _dock(make_napari_viewer(), qtbot)
    assert again.output_edit.text() == str(tmp_path / "picked")


def test_a_model_loads_without_blocking_the_viewer(
    make_napari_viewer, qtbot, swin_checkpoint: Path
) -> None:
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((256, 256, 3), np.uint8), rgb=True, name="rgb")
    widget = _dock(viewer, qtbot)
    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(10)
    loaded_at: list[float] = []
    on_loaded = widget.model_picker._on_loaded

    def record(*args) -> None:
        loaded_at.append(time.perf_counter())
        on_loaded(*args)

    widget.model_picker._on_loaded = record
    qtbot.wait(100)
    widget.model_combo.addItem(str(swin_checkpoint))
    started = time.perf_counter()
    widget.model_combo.setCurrentText(str(swin_checkpoint))
    assert widget.model_summary.text() == "loading swinv2_tiny.safetensors..."
    with qtbot.waitSignal(widget.run_finished, timeout=180_000) as blocker:
        widget.run_button.click()  # while it loads: the run waits for the model
        assert widget.status.text().startswith("Loading the model; the run starts")
        assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    timer.stop()
    assert blocker.args[0] is False, widget.status.text()
    assert "swinv2_tiny_window8_256" in widget.model_summary.text()
    assert "28." in widget.model_summary.text() or "29." in widget.model_summary.text()
    stamps = np.asarray(beats)
    during = stamps[(stamps >= started) & (stamps <= loaded_at[0])]
    gaps = np.diff(np.concatenate([[started], during, [loaded_at[0]]]))
    seconds = loaded_at[0] - started
    print(
        f"\nmodel load {seconds:.2f} s: event-loop max gap {gaps.max() * 1000:.0f} ms, "
        f"mean {gaps.mean() * 1000:.1f} ms over {len(gaps)} beats"
    )
    assert seconds > 0.3  # long enough for the measure to mean something
    assert gaps.max() < 0.25, f"the event loop stalled {gaps.max() * 1000:.0f} ms while loading"
    assert "xT segmentation" in viewer.layers


def test_a_stale_model_load_is_dropped(make_napari_viewer, qtbot, swin_checkpoint: Path) -> None:
    viewer = make_napari_viewer()
    widget = _dock(viewer, qtbot)
    demo_summary = widget.model_summary.text()
    widget.model_combo.addItem(str(swin_checkpoint))
    widget.model_combo.setCurrentText(str(swin_checkpoint))
    assert widget.model_loading
    widget.model_combo.setCurrentText("xt_demo_sar")  # changed the mind while it loads
    assert widget.model_summary.text() == demo_summary  # the loaded one, at once
    qtbot.waitUntil(lambda: not widget.model_loading, timeout=120_000)
    assert widget.models.key is not None and widget.models.key[0] == "xt_demo_sar"
    assert widget.model_summary.text() == demo_summary


def test_the_inspector_is_off_while_a_run_goes(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.add_image(_scene(512, seed=23), name="scene")
    widget = _dock(viewer, qtbot)
    inspector = widget.inspector
    assert _run(widget, qtbot) is False
    inspector.button.setChecked(True)
    assert inspector._on_click in viewer.mouse_drag_callbacks
    seen: list[tuple[bool, bool, bool]] = []
    paint = widget.results.paint

    def look(event: RegionDone) -> None:
        paint(event)
        state = inspector.button
        seen.append(
            (
                state.isEnabled(),
                state.isChecked(),
                inspector._on_click in viewer.mouse_drag_callbacks,
            )
        )
        inspector.inspect_at((100.0, 100.0))  # a click now does nothing

    widget.results.paint = look
    assert _run(widget, qtbot) is False
    assert seen and set(seen) == {(False, False, False)}
    assert inspector.worker is None and "xT region attention" not in viewer.layers
    assert inspector.button.isEnabled() and not inspector.button.isChecked()


def test_the_inspector_follows_an_overlap_run(make_napari_viewer, qtbot) -> None:
    from napari_xt._threads import call_in_fresh_thread
    from xt_engine.runtime.region_attention import region_attention

    image = _scene(384, seed=24)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="scene", scale=(2.0, 2.0))
    widget = _dock(viewer, qtbot)
    widget.overlap_spin.setValue(16)  # 128 px regions 96 px apart: 4 x 4
    assert _run(widget, qtbot) is False
    grid = widget.inspector.context.grid()
    assert (grid.rows, grid.cols, grid.step) == (4, 4, 96)
    # world (400, 200) -> pixel (200, 100): tile row 2, col 1 (without the overlap: region 3)
    assert widget.inspector.region_at((400.0, 200.0)) == 9
    tile = grid.region(9)
    assert tile.y0 <= 200 < tile.y1 and tile.x0 <= 100 < tile.x1
    assert widget.inspector.region_at((770.0, 10.0)) is None  # below the image
    widget.inspector.inspect_at((400.0, 200.0))
    qtbot.waitUntil(lambda: "xT region attention" in viewer.layers, timeout=60_000)
    heat = viewer.layers["xT region attention"]
    expected = call_in_fresh_thread(
        region_attention, image, widget.inspector.context.model, 9, overlap=16, batch_size=8
    )
    assert heat.data.shape == (13, 13)  # tokens 3 apart between regions of 4: 3 * 3 + 4
    np.testing.assert_allclose(heat.data, expected.weights, atol=1e-6)
    assert heat.data.sum() == pytest.approx(1.0, abs=1e-4)
    # token cell (0, 0) covers level pixels [-16, 16): its centre, pixel -0.5, is world -1
    np.testing.assert_allclose(heat.scale[-2:], [64, 64])
    np.testing.assert_allclose(heat.translate[-2:], [-1, -1])
