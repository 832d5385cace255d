"""The manifest's reader and sample contributions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr


def test_contributions_import_without_qt() -> None:
    code = (
        "import sys, napari_xt._reader, napari_xt._sample_data, napari_xt._writer\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'PyQt6', 'PyQt5', 'PySide6', "
        "'PySide2', 'qtpy'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def _pyramid_tiff(path: Path) -> np.ndarray:
    base = np.random.default_rng(0).integers(0, 255, (512, 640, 3), dtype=np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            base,
            subifds=2,
            tile=(128, 128),
            metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
        )
        tif.write(base[::2, ::2], subfiletype=1, tile=(128, 128))
        tif.write(base[::4, ::4], subfiletype=1, tile=(64, 64))
    return base


def test_reader_returns_lazy_scaled_pyramids(tmp_path: Path) -> None:
    from napari_xt._reader import napari_get_reader

    path = tmp_path / "slide.ome.tif"
    base = _pyramid_tiff(path)
    reader = napari_get_reader(str(path))
    assert reader is not None and napari_get_reader(str(tmp_path / "x.png")) is None
    [(data, kwargs, kind)] = reader(str(path))
    assert kind == "image" and kwargs["multiscale"] and kwargs["rgb"]
    assert kwargs["scale"] == (0.5, 0.5)
    assert [tuple(level.shape) for level in data] == [(512, 640, 3), (256, 320, 3), (128, 160, 3)]
    assert not isinstance(data[0], np.ndarray)  # lazy: nothing loaded yet
    np.testing.assert_array_equal(np.asarray(data[0][100:120, 200:230]), base[100:120, 200:230])


def test_reader_keeps_the_channels_of_an_ome_zarr_in_one_layer(tmp_path: Path) -> None:
    from napari_xt._inputs import LAYER_META
    from napari_xt._reader import read_image

    store = tmp_path / "sar.ome.zarr"
    root = zarr.open_group(str(store), mode="w", zarr_format=3)
    data = np.random.default_rng(1).random((1, 2, 1, 256, 256), dtype=np.float32)
    root.create_array("0", data=data, chunks=(1, 1, 1, 128, 128))
    root.create_array("1", data=data[..., ::2, ::2], chunks=(1, 1, 1, 128, 128))
    axes = [
        {"name": "t", "type": "time"},
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space"},
        {"name": "y", "type": "space", "unit": "meter"},
        {"name": "x", "type": "space", "unit": "meter"},
    ]
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": [1, 1, 1, 10.0 * 2**k, 10.0 * 2**k]}
            ],
        }
        for k in range(2)
    ]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    [(levels, kwargs, _)] = read_image(str(store))
    assert "channel_axis" not in kwargs and kwargs["metadata"][LAYER_META]["axes"] == "cyx"
    assert kwargs["scale"] == (10.0, 10.0)  # napari gives the channel axis scale 1
    assert kwargs["units"] == ("pixel", "meter", "meter")
    assert [tuple(level.shape) for level in levels] == [(2, 256, 256), (2, 128, 128)]
    np.testing.assert_array_equal(np.asarray(levels[1][1, :4, :4]), data[0, 1, 0, ::2, ::2][:4, :4])


@pytest.mark.gui
def test_viewer_opens_a_slide_through_the_plugin(make_napari_viewer, tmp_path: Path) -> None:
    path = tmp_path / "slide.ome.tif"
    _pyramid_tiff(path)
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(path), plugin="napari-xt")
    assert layer.multiscale and layer.rgb and tuple(layer.scale) == (0.5, 0.5)
    assert layer.data[0].shape == (512, 640, 3)


@pytest.mark.gui
def test_sample_data_opens(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=False)
    viewer.open_sample("napari-xt", "sar_scene")
    assert [layer.name for layer in viewer.layers] == ["synthetic SAR scene", "ground truth"]
    truth = viewer.layers["ground truth"].data
    assert truth.shape == (2048, 2048) and set(np.unique(truth)) <= {0, 1, 2, 3}


@pytest.mark.gui
def test_plugin_loads_after_the_viewer_exists() -> None:
    """napari imports plugin modules after its OpenGL context exists; with Mesa's llvmpipe,
    loading triton's LLVM then (torchvision/timm pull it in) used to segfault the process."""
    code = (
        "import napari\n"
        "viewer = napari.Viewer(show=False)\n"
        "import napari_xt._widget, timm\n"
        "timm.create_model('test_convnext', features_only=True)\n"
        "print('alive')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "alive" in result.stdout, result.stderr[-2000:]


@pytest.mark.gui
def test_writers_save_labels_as_ome_zarr_and_points_as_csv(
    make_napari_viewer, tmp_path: Path
) -> None:
    import csv

    from xt_engine.io import open_image

    viewer = make_napari_viewer(show=False)
    labels = np.random.default_rng(0).integers(0, 4, (300, 200), dtype=np.uint8)
    layer = viewer.add_labels(
        labels,
        name="seg",
        scale=(0.5, 0.5),
        features={"index": [0, 1, 2, 3], "class": ["bg", "a", "b", "c"]},
    )
    out = str(tmp_path / "seg.zarr")
    assert layer.save(out, plugin="napari-xt") == [out]
    source = open_image(out)
    assert source.pixel_size == (0.5, 0.5)
    np.testing.assert_array_equal(source.read(0, 0, 0, 300, 200)[0], labels)
    attrs = zarr.open_group(out, mode="r").attrs["ome"]
    assert attrs["image-label"]["properties"][2] == {"label-value": 2, "class": "b"}

    points = viewer.add_points(
        np.array([[10.0, 20.0], [30.5, 40.25]]),
        name="dets",
        features={"class": ["ship", "ship"], "score": [0.9, 0.5]},
    )
    csv_path = str(tmp_path / "dets.csv")
    assert points.save(csv_path, plugin="napari-xt") == [csv_path]
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert rows[1] == {"y": "30.50", "x": "40.25", "class": "ship", "score": "0.5"}


def test_sample_with_results_matches_the_truth_on_land() -> None:
    from napari_xt._sample_data import sar_scene_with_results

    (image, _, _), (truth, _, _), (seg, meta, kind) = sar_scene_with_results(size=512, seed=4)
    assert kind == "labels" and seg.shape == truth.shape == image.shape
    land = truth == 1
    assert land.any() and (seg[land] == 1).mean() > 0.9  # the trained demo model finds land
    assert meta["features"]["class"][2] == "vessel_near_shore"


def test_a_result_store_opens_as_its_result(tmp_path: Path) -> None:
    """What a run wrote comes back in napari: the label pyramid with the model's classes."""
    from napari.layers import Labels

    from napari_xt._reader import napari_get_reader, read_result_store
    from xt_engine import CancelToken, RegionDone, run_inference
    from xt_engine.weights.loading import load_model

    image = np.random.default_rng(5).integers(0, 255, (300, 520), dtype=np.uint8)
    store = tmp_path / "run.zarr"
    model = load_model("xt_demo_sar")
    expected = np.zeros(image.shape, np.uint8)
    for event in run_inference(image, model, output=store, batch_size=8):
        if isinstance(event, RegionDone):
            r = event.region
            expected[r.y0 : r.y1, r.x0 : r.x1] = event.labels
    assert napari_get_reader(str(store)) is read_result_store
    [(data, kwargs, kind)] = read_result_store(str(store))
    assert kind == "labels" and kwargs["name"] == "xT run.zarr"
    layer = Labels(data, **kwargs)
    level0 = layer.data[0] if layer.multiscale else layer.data
    np.testing.assert_array_equal(np.asarray(level0[:]), expected)
    assert list(layer.features["class"])[:2] == ["background", "land"]

    cancel = CancelToken()
    cancel.cancel()
    partial = tmp_path / "partial.zarr"
    for _ in run_inference(image, model, output=partial, cancel=cancel):
        pass
    assert read_result_store(str(partial))[0][1]["name"] == "xT partial.zarr, incomplete"


def test_the_reader_takes_every_slide_format_the_engine_opens(tmp_path: Path) -> None:
    """napari_get_reader answers for the slide suffixes and DICOM folders, and a DICOM WSI
    written by wsidicom opens as one RGB layer with the pixel size as scale."""
    from napari_xt._reader import napari_get_reader, read_image
    from xt_engine.io import SLIDE_SUFFIXES
    from xt_engine.io.dicom_writer import write_dicom_wsi

    for suffix in SLIDE_SUFFIXES:
        assert napari_get_reader(str(tmp_path / f"slide{suffix}")) is read_image, suffix
    image = np.random.default_rng(0).integers(0, 255, (256, 384, 3), dtype=np.uint8)
    folder = tmp_path / "dicom"
    write_dicom_wsi(image, folder, tile=128, mpp=0.25)
    assert napari_get_reader(str(folder)) is read_image
    ((data, kwargs, kind),) = read_image(str(folder))
    level0 = data[0] if isinstance(data, list) else data
    assert kind == "image" and kwargs.get("rgb") and tuple(level0.shape) == (256, 384, 3)
    np.testing.assert_array_equal(np.asarray(level0[:16, :16]), image[:16, :16])
    assert tuple(kwargs["scale"])[-2:] == (0.25, 0.25)


def test_a_result_store_opens_over_its_source_image(tmp_path: Path) -> None:
    """A store of a run on a file opens as that image and, on top, the labels."""
    import tifffile

    from napari_xt._reader import read_result_store
    from xt_engine import run_inference
    from xt_engine.weights.loading import load_model

    image = np.random.default_rng(6).integers(0, 255, (256, 256), dtype=np.uint8)
    tif = tmp_path / "scene.tif"
    tifffile.imwrite(tif, image)
    store = tmp_path / "run.zarr"
    list(run_inference(str(tif), load_model("xt_demo_sar"), output=store))
    layers = read_result_store(str(store))
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    data = layers[0][0]
    np.testing.assert_array_equal(np.asarray((data[0] if isinstance(data, list) else data)[:]), image)
    tif.unlink()  # the image gone: the result still opens, alone
    assert [kind for _, _, kind in read_result_store(str(store))] == ["labels"]
