"""Export..., Copy command and Copy Slurm script in the widget, and the result layers' units.

A GeoTIFF in metres (opened by the plugin's reader) is run from the widget; its result layers
carry the image's units (no "Inconsistent units" warning); the store exports from the dialog in
a worker (an existing file only replaced when confirmed); the copied ``xt infer`` line parses
with the engine's own parser into the widget's settings, and, run, writes the widget's labels.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from xt_engine.cli import build_parser

TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # 10 m pixels, north up, UTM 33N


def _geotiff(path: Path) -> Path:
    """A 2-band uint16 GeoTIFF written by GDAL (rasterio), 256 px, 10 m pixels."""
    import rasterio
    from rasterio.transform import Affine

    data = np.random.default_rng(1).integers(1, 10000, (2, 256, 256)).astype(np.uint16)
    profile = dict(width=256, height=256, count=2, dtype="uint16", crs="EPSG:32633", nodata=0)
    with rasterio.open(
        path, "w", driver="GTiff", transform=Affine(*TRANSFORM), tiled=True, **profile
    ) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def metre_checkpoint(tmp_path_factory) -> Path:
    """A tiny 2-band model (64 px regions) trained at 20 m pixels (random weights)."""
    import torch

    from napari_xt._threads import call_in_fresh_thread
    from xt_engine import create_model, save_checkpoint
    from xt_engine.config import XTConfig
    from xt_engine.models import model_config

    data = model_config("test_convnext_none").to_dict()
    data["region_encoder"] |= {"in_chans": 2, "input_scale": 1e-4, "modality": "optical"}
    data["tiling"] |= {"pixel_size": 20.0, "pixel_unit": "meter"}
    path = tmp_path_factory.mktemp("metre model") / "scene 20m.safetensors"  # (quoting)

    def build() -> None:
        torch.manual_seed(5)
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
    return widget


def _labels(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")["labels/segmentation/0"][:])


def _clipboard() -> str:
    from qtpy.QtWidgets import QApplication

    return QApplication.clipboard().text()


def _command_line(text: str, sub: str = "infer") -> list[str]:
    """The ``xt SUB`` line of a copied text, split as the shell does (after ``xt``)."""
    lines = [line for line in text.splitlines() if line.startswith(f"xt {sub} ")]
    assert len(lines) == 1, text
    return shlex.split(lines[0])[1:]


def _export(widget, qtbot, to: str, target: Path | None = None) -> Path:
    dialog = widget.exports.open_dialog()
    assert dialog is not None
    dialog.set_format(to)
    if target is not None:
        dialog.path_edit.setText(str(target))
    path = dialog.target()
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    if widget.exports.worker is not None:
        qtbot.waitUntil(lambda: widget.exports.worker is None, timeout=60_000)
    return path


# -- without a viewer ----------------------------------------------------------------------------
def test_the_formats_offered_fit_the_store() -> None:
    from napari_xt._export_actions import default_target, export_formats

    seg = {"label_levels": 2, "model_config": {"head": {"task": "segmentation"}}}
    assert export_formats(seg) == ["geojson", "ome-tiff", "report"]
    geo = seg | {"georeference": {"crs_epsg": 32633}}
    assert export_formats(geo) == ["geojson", "geotiff", "ome-tiff", "report"]
    det = {"label_levels": 0, "model_config": {"head": {"task": "detection"}}}
    assert export_formats(det)[0] == "csv" and export_formats(det)[-1] == "report"
    store = Path("/data/run-20240101-120000.zarr")
    assert default_target(store, "geojson") == Path("/data/run-20240101-120000.geojson")
    assert default_target(store, "report").name == "run-20240101-120000-report.csv"


# -- in napari -----------------------------------------------------------------------------------
@pytest.mark.gui
def test_export_copy_command_and_units_after_a_geotiff_run(
    make_napari_viewer, qtbot, tmp_path: Path, artifacts_dir: Path, metre_checkpoint: Path
) -> None:
    from napari.utils.notifications import notification_manager

    from napari_xt._threads import call_in_fresh_thread
    from xt_engine.cli import main

    path = _geotiff(tmp_path / "scene.tif")
    viewer = make_napari_viewer(show=True)
    image = viewer.open(str(path), plugin="napari-xt")[0]
    assert [str(u) for u in image.units] == ["pixel", "meter", "meter"]
    widget = _dock(viewer, qtbot, str(metre_checkpoint))
    widget.batch_spin.setValue(4)
    widget.attention_check.setChecked(True)
    assert not widget.exports.export_button.isEnabled()  # no store yet
    widget.exports.copy_command()  # before the run: the run's settings
    copied = _clipboard()
    assert "#" not in copied, copied  # a file, a checkpoint, a method: nothing to explain

    seen = len(notification_manager.records)
    with qtbot.waitSignal(widget.run_finished, timeout=120_000) as blocker:
        widget.run_button.click()
        assert not widget.exports.export_button.isEnabled()  # while a run goes
        assert not widget.exports.copy_button.isEnabled()
    assert blocker.args[0] is False, widget.status.text()
    store = widget.results.store
    qtbot.wait(200)  # napari updates the world units on the next draw
    for name in ("xT segmentation", "xT attention"):
        assert viewer.layers[name].units == image.units[-2:], name
    assert viewer.layers.extent.units is not None
    messages = [str(n.message) for n in notification_manager.records[seen:]]
    assert not [m for m in messages if "units" in m.lower()], messages

    # the copied command is what xt infer accepts, with the widget's settings ...
    args = build_parser().parse_args(_command_line(copied))
    assert args.image == str(path.resolve()) and args.model == str(metre_checkpoint)
    out_arg = Path(args.out)  # a new store in the output folder (the run then took that name)
    assert out_arg.parent == Path(widget.output.folder()) and out_arg.name.startswith("run-")
    assert args.level is None  # the model's level: xt infer's own default (resampled to 20 m)
    assert args.roi is None and args.batch_size == 4 and args.device == "auto"
    assert args.precision == "auto" and args.overlap == 0 and args.foreground == "auto"
    assert args.attention is True
    # ... and writes the widget's result
    out = tmp_path / "cli.zarr"
    argv = _command_line(copied)
    argv[argv.index("--out") + 1] = str(out)
    assert call_in_fresh_thread(main, argv) == 0
    np.testing.assert_array_equal(_labels(out), _labels(store))

    # Export...: the formats that fit, in a worker, beside the store
    assert widget.exports.export_button.isEnabled()
    dialog = widget.exports.open_dialog()
    offered = [dialog.format_combo.itemData(i) for i in range(dialog.format_combo.count())]
    assert offered == ["geojson", "geotiff", "ome-tiff", "report"]
    assert not dialog.partial_check.isVisibleTo(dialog)  # the run finished
    dialog.reject()
    geojson = _export(widget, qtbot, "geojson")
    assert geojson == store.parent / (store.name.removesuffix(".zarr") + ".geojson")
    assert geojson.is_file() and widget.status.text() == f"Exported geojson to {geojson}"
    cog = _export(widget, qtbot, "geotiff")
    import rasterio

    with rasterio.open(cog) as ds:
        assert ds.crs.to_epsg() == 32633
    # an existing file: kept unless the user confirms
    before = geojson.stat().st_mtime_ns
    asked: list[Path] = []
    widget.exports.confirm_overwrite = lambda p: asked.append(p) or False
    _export(widget, qtbot, "geojson")
    assert asked == [geojson] and geojson.stat().st_mtime_ns == before
    assert widget.status.text().startswith("Not exported: ")
    widget.exports.confirm_overwrite = lambda p: True
    _export(widget, qtbot, "geojson")
    assert geojson.stat().st_mtime_ns != before and widget.status.text().startswith("Exported")
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(
        artifacts_dir / "widget_export_and_units.png"
    )
    _export(widget, qtbot, "report", tmp_path / "reports" / "scene.csv")  # (made)
    assert (tmp_path / "reports" / "scene.csv").read_text().startswith("image,class")
    _export(widget, qtbot, "ome-tiff", store / "labels.ome.tif")  # inside the store: refused
    assert widget.status.text().startswith("Export failed: ") and "inside" in widget.status.text()

    # other settings: each option follows the widget
    viewer.add_shapes(  # (in the image's units: napari drops units when layers differ)
        [np.array([[20.0, 30.0], [900.0, 1200.0]])],
        shape_type="rectangle",
        name="box",
        units=image.units[-2:],
    )
    widget.scope_combo.setCurrentText("Shapes: box")
    widget.level_combo.setCurrentIndex(widget.level_combo.findData(0))
    widget.batch_spin.setValue(2)
    widget.device_combo.setCurrentText("cpu")
    widget.precision_combo.setCurrentText("fp32")
    widget.overlap_spin.setValue(16)
    widget.foreground_combo.setCurrentText("none")
    widget.attention_check.setChecked(False)
    widget.exports.copy_command()
    args = build_parser().parse_args(_command_line(_clipboard()))
    assert args.level == 0 and args.batch_size == 2 and args.device == "cpu"
    assert args.precision == "fp32" and args.overlap == 16 and args.foreground == "none"
    assert args.attention is False
    assert args.roi == [2, 3, 91, 121]  # the box in world metres / 10 m, outward, +1 px
    widget.exports.copy_slurm_script()
    script = _clipboard()
    assert script.startswith("#!/bin/bash\n#SBATCH --job-name=xt-batch\n#SBATCH --array=")
    assert "#SBATCH --gres" not in script  # a CPU run
    batch = build_parser().parse_args(_command_line(script, "batch"))
    assert batch.inputs == [str(path.resolve().parent / "*.tif")]
    assert batch.out_dir == widget.output.folder() and batch.model == str(metre_checkpoint)
    assert (batch.level, batch.batch_size, batch.device) == (0, 2, "cpu")
    assert (batch.precision, batch.overlap, batch.foreground) == ("fp32", 16, "none")
    assert "# the widget's ROI (level-0 Y0 X0 Y1 X1: 2 3 91 121)" in script

    # the store opened again (File > Open) is in the image's units too
    seen = len(notification_manager.records)
    reopened = viewer.open(str(store), plugin="napari-xt")[-1]  # over its source image
    qtbot.wait(200)
    assert reopened.units == image.units[-2:] and viewer.layers.extent.units is not None
    messages = [str(n.message) for n in notification_manager.records[seen:]]
    assert not [m for m in messages if "units" in m.lower()], messages


@pytest.mark.gui
def test_copied_commands_name_what_has_no_file(make_napari_viewer, qtbot) -> None:
    from napari_xt._commands import NO_FILE
    from napari_xt._sample_data import sar_scene

    viewer = make_napari_viewer(show=True)
    image = sar_scene(size=256, seed=3)[0]
    viewer.add_image(image[0], **image[1])
    viewer.add_labels(np.ones((256, 256), np.uint8), name="paint")
    widget = _dock(viewer, qtbot)
    widget.foreground_combo.setCurrentText("Labels: paint")
    widget.exports.copy_command()
    text = _clipboard()
    assert f"# {NO_FILE}\n" in text
    assert "# the foreground is the napari layer 'paint'" in text
    args = build_parser().parse_args(_command_line(text))
    assert args.image == "IMAGE" and args.foreground == "MASK" and args.model == "xt_demo_sar"
    assert widget.status.text().startswith("Copied the xt infer command")
    assert "2 note(s)" in widget.status.text()

    viewer.add_image(image[0].copy(), name="second band")
    widget.image_combo.setCurrentText(image[1]["name"])
    widget.images.set_stacked([image[1]["name"], "second band"])
    widget.foreground_combo.setCurrentText("auto")
    widget.exports.copy_slurm_script()
    script = _clipboard()
    assert "# the image stacks 2 napari layers as channels" in script
    assert "#SBATCH --gres=gpu:1" in script  # device auto: a GPU per task
    batch = build_parser().parse_args(_command_line(script, "batch"))
    assert batch.inputs == ["IMAGES"] and batch.device == "auto"
