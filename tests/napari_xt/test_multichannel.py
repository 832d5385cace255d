"""A multichannel image is one input: a 2-band SAR scene opened by the plugin's reader is one
layer a 2-channel model runs on, single-channel layers (napari's channel_axis split, as
napari-ome-zarr makes) stack as its channels, and a channel mismatch is refused before a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from xt_engine import RegionDone, run_inference
from xt_engine.weights.loading import load_model


def _two_band_scene(size: int = 256, seed: int = 5) -> np.ndarray:
    """(2, H, W) uint8: a VV-like band and a VH-like band that is not a copy of it."""
    from xt_engine.synthetic import make_sar_scene

    vv = make_sar_scene((size, size), seed=seed)[0]
    noise = np.random.default_rng(seed).integers(0, 40, vv.shape)
    vh = np.clip(vv.astype(np.int32) // 2 + noise, 0, 255).astype(np.uint8)
    return np.stack([vv, vh])


@pytest.fixture(scope="module")
def two_channel_checkpoint(tmp_path_factory) -> Path:
    """``test_convnext_txl`` with 2 input channels (random weights, seeded), as a checkpoint."""
    import torch

    from napari_xt._threads import call_in_fresh_thread
    from xt_engine import create_model, save_checkpoint
    from xt_engine.models import model_config

    config = model_config("test_convnext_txl").to_dict()
    config["region_encoder"]["in_chans"] = 2
    path = tmp_path_factory.mktemp("two-channel") / "sar2.safetensors"

    def build() -> None:
        torch.manual_seed(3)
        save_checkpoint(create_model(config), path)

    call_in_fresh_thread(build)
    return path


def _headless_labels(image: np.ndarray, checkpoint: Path) -> np.ndarray:
    out = np.zeros(image.shape[-2:], np.uint8)
    for event in run_inference(image, load_model(str(checkpoint)), batch_size=8):
        if isinstance(event, RegionDone):
            r = event.region
            out[r.y0 : r.y1, r.x0 : r.x1] = event.labels
    return out


def _dock(viewer, qtbot, checkpoint: Path):
    _, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    qtbot.waitUntil(lambda: not widget.model_loading, timeout=60_000)
    widget.model_combo.addItem(str(checkpoint))
    widget.model_combo.setCurrentText(str(checkpoint))
    qtbot.waitUntil(lambda: "2 channel(s)" in widget.model_summary.text(), timeout=60_000)
    widget.scope_combo.setCurrentText("Whole image")
    widget.batch_spin.setValue(8)
    return widget


def _run(widget, qtbot) -> bool:
    with qtbot.waitSignal(widget.run_finished, timeout=120_000) as blocker:
        widget.run_button.click()
    return blocker.args[0]


def _labels(viewer) -> np.ndarray:
    layer = viewer.layers["xT segmentation"]
    return np.asarray((layer.data[0] if layer.multiscale else layer.data)[:])


def _channel_rows(widget) -> list[str]:
    rows = widget.images.channels
    return [rows.item(i).text() for i in range(rows.count())]


# -- without a viewer ----------------------------------------------------------------------------
def test_reader_keeps_a_channels_last_scene_as_one_channels_first_layer(tmp_path: Path) -> None:
    from napari_xt._inputs import LAYER_META
    from napari_xt._reader import read_image

    scene = _two_band_scene(128)
    path = tmp_path / "sar_yxc.tif"
    tifffile.imwrite(
        path,
        np.moveaxis(scene, 0, -1),
        photometric="minisblack",
        planarconfig="contig",
        tile=(64, 64),
    )
    [(data, kwargs, kind)] = read_image(str(path))
    assert kind == "image" and "rgb" not in kwargs and "channel_axis" not in kwargs
    assert tuple(data.shape) == (2, 128, 128) and not isinstance(data, np.ndarray)
    assert kwargs["metadata"][LAYER_META]["axes"] == "cyx"
    assert kwargs["axis_labels"] == ("c", "y", "x")
    np.testing.assert_array_equal(np.asarray(data[1, 10:20, 30:40]), scene[1, 10:20, 30:40])


def test_stacked_layers_are_a_lazy_channels_first_source() -> None:
    import dask.array as da
    import zarr

    from napari_xt._inputs import stacked_source

    scene = _two_band_scene(128)

    class Layer:  # what the stacking reads of a napari layer
        def __init__(self, name: str, data) -> None:
            self.name, self.data, self.multiscale = name, data, isinstance(data, list)
            self.rgb, self.ndim, self.metadata = False, 2, {}

    levels = [zarr.array(scene[0], chunks=(32, 32)), zarr.array(scene[0, ::2, ::2])]
    vh = [scene[1], scene[1, ::2, ::2]]
    source = stacked_source([Layer("VV", levels), Layer("VH", vh)])
    assert source.axes == "cyx" and source.num_channels == 2 and source.num_levels == 2
    assert source.channel_names == ["VV", "VH"] and source.name == "VV + VH"
    assert all(isinstance(level, da.Array) for level in source.levels)
    assert source.levels[0].chunks[1:] == ((32,) * 4, (32,) * 4)  # the zarr chunks, no rechunk
    np.testing.assert_array_equal(source.read(1, 5, 6, 40, 50), scene[:, ::2, ::2][:, 5:40, 6:50])
    with pytest.raises(ValueError, match="cannot be stacked"):
        stacked_source([Layer("VV", levels), Layer("small", [scene[1, :64], scene[1, :32]])])


# -- in napari -----------------------------------------------------------------------------------
@pytest.mark.gui
def test_a_two_band_scene_opened_by_the_plugin_runs_a_two_channel_model(
    make_napari_viewer, qtbot, tmp_path: Path, artifacts_dir: Path, two_channel_checkpoint: Path
) -> None:
    scene = _two_band_scene()
    path = tmp_path / "sar_vv_vh.ome.tif"
    tifffile.imwrite(path, scene, ome=True, metadata={"axes": "CYX"}, tile=(128, 128))
    expected = _headless_labels(scene, two_channel_checkpoint)
    assert len(np.unique(expected)) > 1  # a result that can tell a wrong input
    assert not np.array_equal(expected, _headless_labels(scene[::-1], two_channel_checkpoint))

    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(path), plugin="napari-xt")
    assert len(layers) == 1 and len(viewer.layers) == 1  # one layer, not one per channel
    image = viewer.layers[0]
    assert image.data.shape == (2, 256, 256) and not image.rgb
    assert viewer.dims.axis_labels[0] == "c"  # the channels are the slider
    widget = _dock(viewer, qtbot, two_channel_checkpoint)
    assert _channel_rows(widget) == ["sar_vv_vh.ome.tif: 2 channels (axis 0, the slider)"]
    assert _run(widget, qtbot) is False, widget.status.text()
    labels = _labels(viewer)
    assert labels.shape == (256, 256)
    np.testing.assert_array_equal(labels, expected)

    viewer.dims.set_current_step(0, 1)  # the result covers every channel of the slider
    qtbot.wait(100)
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(
        artifacts_dir / "widget_two_band_scene.png"
    )
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    colourful = np.abs(canvas - canvas.mean(axis=2, keepdims=True)).max(axis=2) > 20
    assert colourful.mean() > 0.05, "no overlay colours in the canvas"


@pytest.mark.gui
def test_single_channel_layers_stack_as_the_channels_of_one_input(
    make_napari_viewer, qtbot, artifacts_dir: Path, two_channel_checkpoint: Path
) -> None:
    from qtpy.QtCore import Qt

    scene = _two_band_scene()
    expected = _headless_labels(scene, two_channel_checkpoint)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(scene, channel_axis=0, name=["VV", "VH"])  # as napari-ome-zarr opens it
    viewer.add_image(scene[0, :128], name="other size")  # not stackable with them
    widget = _dock(viewer, qtbot, two_channel_checkpoint)
    widget.image_combo.setCurrentText("VV")
    assert _channel_rows(widget) == ["VV", "VH"]

    assert _run(widget, qtbot) is True  # one channel for a 2-channel model: refused
    assert "VV has 1 channel(s) but the model takes 2" in widget.status.text()
    assert "Channels list" in widget.status.text()
    assert "xT segmentation" not in viewer.layers and widget.run_button.isEnabled()

    widget.images.channels.item(1).setCheckState(Qt.CheckState.Checked)  # the user checks VH
    assert _channel_rows(widget) == ["c0: VV", "c1: VH"]
    assert [layer.name for layer in widget.images.input_layers()] == ["VV", "VH"]
    assert _run(widget, qtbot) is False, widget.status.text()
    np.testing.assert_array_equal(_labels(viewer), expected)
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(
        artifacts_dir / "widget_stacked_channels.png"
    )


@pytest.mark.gui
def test_a_channel_mismatch_is_refused_before_a_run_starts(
    make_napari_viewer, qtbot, two_channel_checkpoint: Path
) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 128, 128), np.float32), name="three bands")
    widget = _dock(viewer, qtbot, two_channel_checkpoint)
    assert _channel_rows(widget) == ["three bands: 3 channels (axis 0, the slider)"]
    with qtbot.waitSignal(widget.run_finished, timeout=5_000) as blocker:
        widget.run_button.click()
        assert widget._worker is None  # refused in the click, no engine run
    assert blocker.args[0] is True
    assert "three bands has 3 channel(s) but the model takes 2" in widget.status.text()
    assert "xT segmentation" not in viewer.layers
