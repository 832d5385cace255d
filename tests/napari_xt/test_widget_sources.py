"""Widget runs see what ``xt infer`` sees: a file the plugin's reader opened runs on the engine's
own source (georeference, nodata, pixel size, channel names), at the level the engine picks for
the model's pixel size; the Foreground choice (the engine's methods, or a Labels / Shapes layer
as a mask) decides which regions run, and the status says how many were skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from xt_engine import RegionDone, run_inference
from xt_engine.weights.loading import load_model

TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # 10 m pixels, north up, UTM 33N


def _geotiff(path: Path) -> Path:
    """A 2-band uint16 GeoTIFF written by GDAL (rasterio), 256 px, nodata 0 on the top 160 rows."""
    import rasterio
    from rasterio.transform import Affine

    data = np.random.default_rng(0).integers(1, 10000, (2, 256, 256)).astype(np.uint16)
    data[:, :160] = 0  # the first row of 64 px regions at 20 m (rows 0-80) has no data
    profile = dict(width=256, height=256, count=2, dtype="uint16", crs="EPSG:32633", nodata=0)
    with rasterio.open(
        path, "w", driver="GTiff", transform=Affine(*TRANSFORM), tiled=True, **profile
    ) as ds:
        ds.write(data)
        ds.set_band_description(1, "VV")
        ds.set_band_description(2, "VH")
    return path


@pytest.fixture(scope="module")
def metre_checkpoint(tmp_path_factory) -> Path:
    """A tiny 2-band optical model (64 px regions) trained at 20 m pixels (random weights)."""
    import torch

    from napari_xt._threads import call_in_fresh_thread
    from xt_engine import create_model, save_checkpoint
    from xt_engine.config import XTConfig
    from xt_engine.models import model_config

    data = model_config("test_convnext_none").to_dict()
    data["region_encoder"] |= {"in_chans": 2, "input_scale": 1e-4, "modality": "optical"}
    data["tiling"] |= {"pixel_size": 20.0, "pixel_unit": "meter"}
    path = tmp_path_factory.mktemp("metre-model") / "scene20m.safetensors"

    def build() -> None:
        torch.manual_seed(4)
        save_checkpoint(create_model(XTConfig.from_dict(data)).eval(), path)

    call_in_fresh_thread(build)
    return path


def _dock(viewer, qtbot, model: str | None = None):
    _, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    qtbot.waitUntil(lambda: not widget.model_loading, timeout=60_000)
    if model is not None:
        widget.model_combo.addItem(model)
        widget.model_combo.setCurrentText(model)
        qtbot.waitUntil(lambda: "2 channel(s)" in widget.model_summary.text(), timeout=60_000)
    widget.scope_combo.setCurrentText("Whole image")
    widget.batch_spin.setValue(4)
    return widget


def _run(widget, qtbot) -> bool:
    with qtbot.waitSignal(widget.run_finished, timeout=120_000) as blocker:
        widget.run_button.click()
    return blocker.args[0]


def _store_labels(store: Path) -> np.ndarray:
    from napari_xt._reader import read_result_store

    data = read_result_store(str(store))[-1][0]  # the image (when its file exists) comes first
    return np.asarray((data[0] if isinstance(data, list) else data)[:])


# -- without a viewer ----------------------------------------------------------------------------
def test_a_shapes_layer_becomes_a_bounded_mask_in_image_pixels() -> None:
    from napari.layers import Image as ImageLayer
    from napari.layers import Shapes

    from napari_xt._foreground import MAX_MASK_PX, foreground_spec

    class Viewer:
        layers: dict[str, object] = {}

    image = ImageLayer(np.zeros((1, 1)), scale=(0.5, 0.5), translate=(100.0, 0.0))
    # image pixels y 1000-3000, x 2000-6000 in world coordinates (scale 0.5, y shifted by 100)
    shapes = Shapes([np.array([[600.0, 1000.0], [1600.0, 3000.0]])], shape_type="rectangle")
    Viewer.layers = {"roi": shapes}
    plan = foreground_spec(Viewer, "Shapes: roi", image, (5000, 8000))
    mask = plan.mask()
    assert mask.shape == (1280, MAX_MASK_PX)  # 8000 px long side -> 2048 px
    ys, xs = np.nonzero(mask)
    f = 8000 / MAX_MASK_PX
    assert abs(ys.min() * f - 1000) <= 2 * f and abs(ys.max() * f - 3000) <= 2 * f
    assert abs(xs.min() * f - 2000) <= 2 * f and abs(xs.max() * f - 6000) <= 2 * f


def test_a_labels_layer_is_passed_lazily_when_aligned_else_sampled() -> None:
    from napari.layers import Image as ImageLayer
    from napari.layers import Labels

    from napari_xt._foreground import foreground_spec

    class Viewer:
        layers: dict[str, object] = {}

    image = ImageLayer(np.zeros((512, 512), np.uint8))
    half = np.zeros((256, 256), np.uint8)  # half resolution over the same extent
    Viewer.layers = {"half": Labels(half, scale=(2, 2), translate=(0.5, 0.5))}
    assert foreground_spec(Viewer, "Labels: half", image, (512, 512)).mask() is half
    small = np.zeros((300, 300), np.uint8)  # covers part of the image only
    small[260:, 260:] = 1
    Viewer.layers = {"small": Labels(small)}
    mask = foreground_spec(Viewer, "Labels: small", image, (512, 512)).mask()
    assert mask.shape == (512, 512) and mask.sum() == 40 * 40 and mask[260:300, 260:300].all()


# -- in napari -----------------------------------------------------------------------------------
@pytest.mark.gui
def test_a_geotiff_runs_from_the_widget_as_xt_infer_runs_it(
    make_napari_viewer, qtbot, tmp_path: Path, artifacts_dir: Path, metre_checkpoint: Path
) -> None:
    from napari_xt._threads import call_in_fresh_thread
    from xt_engine.cli import main

    path = _geotiff(tmp_path / "scene.tif")
    out = tmp_path / "cli.zarr"
    args = ["infer", str(path), "--model", str(metre_checkpoint), "--out", str(out)]
    assert call_in_fresh_thread(main, args) == 0
    cli = dict(zarr.open_group(str(out), mode="r").attrs["xt"])

    viewer = make_napari_viewer(show=True)
    layer = viewer.open(str(path), plugin="napari-xt")[0]
    assert layer.metadata["napari_xt"]["path"] == str(path.resolve())
    widget = _dock(viewer, qtbot, str(metre_checkpoint))
    # 10 m pixels, a model trained at 20 m: the engine resamples level 0 (none within 10%)
    assert widget.level_combo.currentText() == "model's 20 m: resampled from level 0"
    assert widget.foreground_combo.currentText() == "auto"
    assert _run(widget, qtbot) is False, widget.status.text()
    xt = dict(zarr.open_group(str(widget.results.store), mode="r").attrs["xt"])
    assert xt["georeference"]["crs_epsg"] == 32633
    assert xt["georeference"]["transform"] == list(TRANSFORM)
    assert xt["source"]["nodata"] == 0.0 and xt["source"]["channel_names"] == ["VV", "VH"]
    assert xt["effective_pixel_size"] == [20.0, 20.0] and xt["resampled"] is True
    assert xt["foreground"]["method"] == "nodata" and xt["foreground"]["regions_skipped"] == 2
    for key in ("georeference", "source", "effective_pixel_size", "pixel_unit", "resampled"):
        assert xt[key] == cli[key], key
    for key in ("foreground", "level", "downsample", "roi", "num_regions", "determinants"):
        assert xt[key] == cli[key], key
    np.testing.assert_array_equal(_store_labels(widget.results.store), _store_labels(out))
    assert widget.status.text().endswith("; 2 of 4 regions skipped (no foreground, nodata)")
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(
        artifacts_dir / "widget_geotiff_model_level.png"
    )


@pytest.mark.gui
def test_shapes_and_labels_layers_choose_the_regions_that_run(
    make_napari_viewer, qtbot, artifacts_dir: Path
) -> None:
    from napari_xt._sample_data import sar_scene

    viewer = make_napari_viewer(show=True)
    image = sar_scene(size=512, seed=3)[0]
    viewer.add_image(image[0], **image[1])
    viewer.add_shapes(
        [np.array([[0.0, 0.0], [200.0, 200.0]])], shape_type="rectangle", name="tissue"
    )
    widget = _dock(viewer, qtbot)
    items = [widget.foreground_combo.itemText(i) for i in range(4)]
    assert items == ["auto", "none", "otsu", "nodata"]
    widget.foreground_combo.setCurrentText("Shapes: tissue")
    assert _run(widget, qtbot) is False, widget.status.text()
    assert widget.status.text().endswith("; 12 of 16 regions skipped (no foreground, mask)")
    qtbot.wait(50)  # the layout settles
    for label in (widget.status, widget.model_summary):  # 2 lines each: neither is clipped
        assert label.height() >= label.heightForWidth(label.width()), label.text()
    mask = np.zeros((512, 512), bool)
    mask[:200, :200] = True  # the same regions: 2 x 2 of 128 px
    expected = np.zeros((512, 512), np.uint8)
    for event in run_inference(image[0], load_model("xt_demo_sar"), foreground=mask):
        if isinstance(event, RegionDone):
            r = event.region
            expected[r.y0 : r.y1, r.x0 : r.x1] = event.labels
    layer = viewer.layers["xT segmentation"]
    got = np.asarray((layer.data[0] if layer.multiscale else layer.data)[:])
    np.testing.assert_array_equal(got, expected)
    assert not got[256:].any() and not got[:, 256:].any()
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(
        artifacts_dir / "widget_foreground_shapes.png"
    )

    painted = np.zeros((300, 300), np.uint8)
    painted[260:, 260:] = 1  # image pixels 260-299: the region at row 2, column 2
    viewer.add_labels(painted, name="paint")
    widget.foreground_combo.setCurrentText("Labels: paint")
    assert _run(widget, qtbot) is False, widget.status.text()
    assert widget.status.text().endswith("; 15 of 16 regions skipped (no foreground, mask)")
