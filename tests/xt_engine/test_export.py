"""`xt export`: result stores as QuPath GeoJSON, COG GeoTIFF, OME-TIFF, detection tables and
per-image reports (xt_engine.export), read back by third-party readers (shapely, rasterio/GDAL,
tifffile)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from shapely.geometry import shape

from xt_engine.cli import main
from xt_engine.export import export_store
from xt_engine.io import ImageSource
from xt_engine.io.source import Georeference
from xt_engine.models import model_config
from xt_engine.store.result_store import DETECTIONS_FILE, OutputStore
from xt_engine.tiling import RegionGrid

SIDE = 256  # 4 x 4 regions of 64 px


def _labels() -> np.ndarray:
    """Class 1: a disc centred on the corner shared by four regions (128, 128); class 2: a
    ring (a disc with a hole) inside one region row band and across a column border."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    labels = np.zeros((SIDE, SIDE), np.uint8)
    labels[(yy - 128) ** 2 + (xx - 128) ** 2 < 40**2] = 1
    ring = (yy - 210) ** 2 + (xx - 64) ** 2
    labels[(ring < 30**2) & (ring >= 12**2)] = 2
    return labels


def _store(path: Path, labels: np.ndarray, *, geo: bool = False, complete: bool = True,
           pixel: tuple[float, float] | None = (0.5, 0.5)) -> Path:
    config = model_config("test_convnext_none")
    config.head.num_classes = 3
    georeference = (
        Georeference((10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0), None, 32633, "metre")
        if geo else None
    )
    source = ImageSource(
        [np.zeros((SIDE, SIDE), np.uint8)], "yx", pixel_size=(10.0, 10.0) if geo else pixel,
        unit="meter" if geo else "micrometer" if pixel else None, name="scene",
        georeference=georeference, nodata=0.0 if geo else None,
    )
    grid = RegionGrid.for_image((SIDE, SIDE), 64)
    store = OutputStore.create(path, source=source, level=0, grid=grid, config=config)
    store.write_batch([(r, labels[r.y0 : r.y1, r.x0 : r.x1], None, None, None) for r in grid])
    if complete:
        from xt_engine.runtime.inference import _report

        store.mark_complete(report=_report(path))
    return path


def test_geojson_polygons_are_whole_valid_and_qupath_shaped(tmp_path: Path) -> None:
    labels = _labels()
    store = _store(tmp_path / "run.zarr", labels)
    out = tmp_path / "run.geojson"
    summary = export_store(store, "geojson", out)
    data = json.loads(out.read_text())
    assert data["type"] == "FeatureCollection" and "crs" not in data  # pixels, no CRS
    by_class: dict[str, list] = {}
    for feature in data["features"]:
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert set(props["classification"]) == {"name", "color"}
        assert len(props["classification"]["color"]) == 3
        by_class.setdefault(props["classification"]["name"], []).append(shape(feature["geometry"]))
    names = model_config("test_convnext_none").head.names()
    assert summary["annotations"] == 2
    (disc,) = by_class[names[1]]  # one polygon: no seam at the region corner it straddles
    (ring,) = by_class[names[2]]
    assert disc.is_valid and ring.is_valid
    assert len(ring.interiors) == 1  # the hole is kept
    assert abs(disc.area - (labels == 1).sum()) / (labels == 1).sum() < 0.01
    assert abs(ring.area - (labels == 2).sum()) / (labels == 2).sum() < 0.01


def test_geojson_of_a_scene_is_in_its_crs(tmp_path: Path) -> None:
    store = _store(tmp_path / "scene.zarr", _labels(), geo=True)
    out = tmp_path / "scene.geojson"
    export_store(store, "geojson", out)
    data = json.loads(out.read_text())
    assert data["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    disc = shape(data["features"][0]["geometry"])
    x, y = disc.centroid.x, disc.centroid.y  # pixel (128, 128) -> x 500000 + 1280
    assert abs(x - 501280) < 15 and abs(y - (6000000 - 1280)) < 15
    assert abs(disc.area - (_labels() == 1).sum() * 100) / disc.area < 0.01  # 10 m pixels


def test_geotiff_carries_the_crs_transform_and_values(tmp_path: Path) -> None:
    import rasterio

    labels = _labels()
    store = _store(tmp_path / "scene.zarr", labels, geo=True)
    out = tmp_path / "scene.tif"
    export_store(store, "geotiff", out)
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32633
        assert tuple(src.transform)[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)
        np.testing.assert_array_equal(src.read(1), labels)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.block_shapes == [(256, 256)] and src.tags()["XT_SOURCE_NODATA"] == "0.0"
        assert src.nodata == 0.0  # the source's nodata (0), which a label can hold
    with pytest.raises(Exception, match="no georeference"):
        export_store(_store(tmp_path / "slide.zarr", labels), "geotiff", tmp_path / "s.tif")


def test_ome_tiff_pyramid_and_pixel_size(tmp_path: Path) -> None:
    labels = _labels()
    store = _store(tmp_path / "run.zarr", labels)
    out = tmp_path / "run.ome.tif"
    export_store(store, "ome-tiff", out)
    with tifffile.TiffFile(out) as tif:
        series = tif.series[0]
        np.testing.assert_array_equal(series.asarray(), labels)
        assert len(series.levels) == len(zarr.open_group(str(store))["labels/segmentation"])
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata


def test_report_areas_and_detection_table(tmp_path: Path) -> None:
    labels = _labels()
    store = _store(tmp_path / "run.zarr", labels)
    report = dict(zarr.open_group(str(store)).attrs["xt"])["report"]
    disc = next(r for r in report["classes"] if r["label_pixels"] == int((labels == 1).sum()))
    assert disc["area"] == pytest.approx((labels == 1).sum() * 0.25)  # 0.5 um pixels
    assert disc["area_unit"] == "um2" and disc["area_large_unit"] == "mm2"
    assert report["foreground_fraction"] == pytest.approx((labels > 0).mean(), abs=1e-6)
    (store / DETECTIONS_FILE).write_text(
        "region,y,x,class,class_name,score,height,width\n0,10.00,20.00,1,a,0.9000,4,4\n"
    )
    out = tmp_path / "det.csv"
    export_store(store, "csv", out)
    row = out.read_text().splitlines()[1].split(",")
    assert row[-2:] == ["5.0", "10.0"]  # y_um, x_um
    csv_report = tmp_path / "report.csv"
    export_store(store, "report", csv_report)
    assert csv_report.read_text().splitlines()[0].startswith("image,class,label_pixels")


def test_exports_refuse_in_one_line(tmp_path: Path, capsys) -> None:
    unfinished = _store(tmp_path / "half.zarr", _labels(), complete=False)
    out = tmp_path / "half.geojson"
    assert main(["export", str(unfinished), "--to", "geojson", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--partial" in err[0] and not out.exists()
    assert main(["export", str(unfinished), "--to", "geojson", "--out", str(out),
                 "--partial"]) == 0
    capsys.readouterr()
    assert main(["export", str(unfinished), "--to", "geojson", "--out", str(out),
                 "--partial"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    inside = unfinished / "x.geojson"
    assert main(["export", str(unfinished), "--to", "geojson", "--out", str(inside),
                 "--partial"]) == 2
    assert "inside the result store" in capsys.readouterr().err and not inside.exists()
    assert not list(tmp_path.glob(".xt-export-*"))  # no temporary left behind


def test_every_finished_run_writes_and_prints_its_report(tmp_path: Path, capsys) -> None:
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (128, 192, 3), np.uint8))
    out = tmp_path / "run.zarr"
    assert main(["infer", str(image), "--model", "test_convnext_none", "--allow-untrained",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = dict(zarr.open_group(str(out)).attrs["xt"])["report"]
    assert sum(r["label_pixels"] for r in report["classes"]) == 128 * 192
    assert report["missing_pixels"] == 0
    shown = [r for r in report["classes"] if r["label_pixels"]]
    assert all(f"{100 * r['fraction']:6.2f}% of the area" in printed for r in shown)
