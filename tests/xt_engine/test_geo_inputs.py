"""Georeferenced scenes (GeoTIFF / COG written by GDAL through rasterio) and input values per
model config: CRS, transform, nodata, band names and pixel size in metres read through
``open_image``, carried into the store by ``xt infer``; scaling (numeric, dB), modality and
the errors that name a mismatch (channels, pixel type, unknown CRS, truncated file)."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import tifffile
import zarr
from rasterio.transform import Affine

from xt_engine import create_model
from xt_engine.cli import main
from xt_engine.config import XTConfig
from xt_engine.errors import ConfigError, InputError, XTWarning
from xt_engine.io import open_image
from xt_engine.io.gdal_levels import GdalLevel
from xt_engine.models.registry import model_config
from xt_engine.runtime.input_values import check_inputs, input_mapping, prepare_input
from xt_engine.weights.checkpoint import load_checkpoint, save_checkpoint

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # 10 m pixels, north up


def _bands(count: int = 2, h: int = 150, w: int = 200) -> np.ndarray:
    data = np.random.default_rng(0).integers(1, 10000, (count, h, w)).astype(np.uint16)
    data[:, :64, :] = 0  # a nodata border: the first row of 64 px regions
    return data


def _geotiff(path: Path, data: np.ndarray, driver: str = "GTiff", **kw: Any) -> Path:
    count, h, w = data.shape
    profile = dict(width=w, height=h, count=count, dtype=str(data.dtype), crs="EPSG:32633")
    with rasterio.open(path, "w", driver=driver, transform=TRANSFORM, **profile, **kw) as ds:
        ds.write(data)
        if driver == "GTiff":
            for band in range(count):
                ds.set_band_description(band + 1, ("VV", "VH", "B3")[band])
    return path


def _model_file(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """A tiny untrained checkpoint (64 px regions) with config changes per section."""
    data = model_config("test_convnext_none").to_dict()
    for name, values in sections.items():
        data[name] |= values
    model = create_model(XTConfig.from_dict(data)).eval()
    return save_checkpoint(model, tmp_path / "model.safetensors")


def _infer(image: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["infer", str(image), "--model", str(model), "--out", str(out), *extra])


def test_a_geotiff_in_utm_gives_crs_transform_nodata_and_metres(tmp_path: Path) -> None:
    path = _geotiff(
        tmp_path / "utm.tif", _bands(), nodata=0, tiled=True, blockxsize=64, blockysize=64
    )
    source = open_image(path)
    geo = source.georeference
    assert geo is not None and geo.crs_epsg == 32633 and "UTM zone 33N" in (geo.crs_wkt or "")
    assert geo.transform == (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    assert (source.pixel_size, source.unit, source.nodata) == ((10.0, 10.0), "meter", 0.0)
    assert source.channel_names == ["VV", "VH"] and source.metadata["format"] == "geotiff"
    np.testing.assert_array_equal(source.read(0, 30, 20, 70, 90), _bands()[:, 30:70, 20:90])


def test_a_cog_has_its_overviews_as_levels(tmp_path: Path) -> None:
    data = _bands(1, 256, 256)
    path = _geotiff(
        tmp_path / "cog.tif",
        data,
        driver="COG",
        nodata=0,
        blocksize=64,
        overview_resampling="nearest",
        overviews="AUTO",
    )
    source = open_image(path)
    assert source.num_levels >= 2 and source.shape_yx(1) == (128, 128)
    assert source.georeference is not None and source.georeference.crs_epsg == 32633
    assert source.pixel_size == (10.0, 10.0) and source.unit == "meter"
    np.testing.assert_array_equal(source.read(0, 50, 60, 120, 200)[0], data[0, 50:120, 60:200])
    assert all(isinstance(level, GdalLevel) for level in source.levels)  # GDAL reads windows
    with tifffile.TiffFile(path) as tif:
        overview = tif.series[0].levels[1].asarray()
    np.testing.assert_array_equal(source.read(1, 10, 20, 100, 110)[0], overview[10:100, 20:110])
    with ThreadPoolExecutor(1) as pool:  # another thread opens its own GDAL dataset
        box = pool.submit(source.read, 1, 0, 0, 128, 128).result()
    np.testing.assert_array_equal(box[0], overview)


def test_a_geographic_crs_gives_degrees(tmp_path: Path) -> None:
    path = tmp_path / "wgs84.tif"
    profile = dict(width=64, height=48, count=1, dtype="float32", crs="EPSG:4326")
    with rasterio.open(
        path, "w", driver="GTiff", transform=Affine(1e-4, 0.0, 10.0, 0.0, -2e-4, 50.0), **profile
    ) as ds:
        ds.write(np.ones((1, 48, 64), np.float32))
    source = open_image(path)
    assert source.unit == "degree" and source.pixel_size == pytest.approx((2e-4, 1e-4))
    assert source.georeference is not None and source.georeference.crs_epsg == 4326


def test_the_cli_carries_the_georeference_into_the_store(tmp_path: Path, capsys) -> None:
    image = _geotiff(
        tmp_path / "scene.tif", _bands(), nodata=0, tiled=True, blockxsize=64, blockysize=64
    )
    model = _model_file(
        tmp_path, region_encoder={"in_chans": 2, "input_scale": 1e-4, "modality": "optical"}
    )
    assert _infer(image, model, tmp_path / "out.zarr") == 0
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    xt = root.attrs["xt"]
    geo = xt["georeference"]
    assert geo["crs_epsg"] == 32633 and "UTM zone 33N" in geo["crs_wkt"]
    assert geo["transform"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0]
    src = xt["source"]
    assert (src["nodata"], src["pixel_size"], src["unit"]) == (0.0, [10.0, 10.0], "meter")
    assert src["channel_names"] == ["VV", "VH"] and src["format"] == "geotiff"
    assert xt["effective_pixel_size"] == [10.0, 10.0] and xt["resampled"] is False
    assert xt["determinants"]["input_scale"] == pytest.approx(1e-4)
    assert xt["foreground"]["method"] == "nodata" and xt["foreground"]["regions_skipped"] > 0
    labels = root["labels/segmentation"].attrs["ome"]["multiscales"][0]
    assert labels["axes"][0]["unit"] == "meter"
    assert labels["datasets"][0]["coordinateTransformations"][0]["scale"] == [10.0, 10.0]


def test_a_model_for_2_channels_on_3_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    image = _geotiff(tmp_path / "three.tif", _bands(3))
    model = _model_file(tmp_path, region_encoder={"in_chans": 2})
    assert _infer(image, model, tmp_path / "out.zarr") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "model expects 2 input channels, three.tif has 3 (fix: " in err[0]
    assert not (tmp_path / "out.zarr").exists()


def test_uint8_data_for_a_uint16_reflectance_model(tmp_path: Path, capsys) -> None:
    image = tmp_path / "bytes.tif"
    tifffile.imwrite(image, np.zeros((2, 64, 64), np.uint8), photometric="minisblack")
    strict = _model_file(
        tmp_path, region_encoder={"in_chans": 2, "input_scale": 1e-4, "input_dtype": "uint16"}
    )
    assert _infer(image, strict, tmp_path / "out.zarr") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model expects uint16 pixels, x 0.0001, bytes.tif is uint8" in err[0]
    loose = create_model(
        dataclasses.replace(
            model_config("test_convnext_none"),
            region_encoder=dataclasses.replace(
                model_config("test_convnext_none").region_encoder, in_chans=2, input_scale=1e-4
            ),
        )
    )
    with pytest.warns(XTWarning, match="reach only 0.0255 of"):
        check_inputs(open_image(image), loose.config)


def test_db_scaling_maps_the_range_and_nodata_to_nan(tmp_path: Path) -> None:
    config = model_config("test_convnext_none")
    enc = dataclasses.replace(config.region_encoder, in_chans=1, input_scaling="db")
    config = dataclasses.replace(config, region_encoder=enc)
    db = np.array([[-30.0, -10.0, 10.0, -9999.0]], np.float32)
    source = open_image(db)
    source.nodata = -9999.0
    mapped, scale = prepare_input(source, config)
    assert scale == 1.0 and mapped.dtype == np.float32 and mapped.nodata is None
    values = mapped.read(0, 0, 0, 1, 4)[0, 0]
    np.testing.assert_allclose(values[:3], [0.0, 0.5, 1.0], atol=1e-6)
    assert np.isnan(values[3])
    assert input_mapping(np.dtype(np.float32), enc) == pytest.approx((1 / 40, 0.75))
    with pytest.raises(InputError, match="dB \\(float\\), array is uint16"):
        check_inputs(open_image(np.zeros((8, 8), np.uint16)), config)


def test_modality_and_pad_value_must_agree() -> None:
    with pytest.raises(ConfigError, match="pad_value=0.0 does not suit .*brightfield"):
        XTConfig.from_dict({"region_encoder": {"modality": "brightfield"}})
    config = XTConfig.from_dict(
        {"region_encoder": {"modality": "brightfield"}, "tiling": {"pad_value": 1.0}}
    )
    assert config.region_encoder.modality == "brightfield"
    with pytest.raises(ConfigError, match="input_scale"):
        XTConfig.from_dict({"region_encoder": {"input_scale": -1.0}})


def test_new_config_fields_round_trip_a_checkpoint_and_old_ones_load(tmp_path: Path) -> None:
    path = _model_file(
        tmp_path,
        tiling={"pixel_size": 10.0, "pixel_unit": "meter"},
        region_encoder={"input_scale": 1e-4, "input_dtype": "uint16", "modality": "optical"},
    )
    config = load_checkpoint(path).config
    assert (config.tiling.pixel_size, config.tiling.pixel_unit) == (10.0, "meter")
    assert config.region_encoder.input_dtype == "uint16"
    old = model_config("test_convnext_none").to_dict()
    for key in ("pixel_size", "pixel_unit"):
        del old["tiling"][key]
    for key in ("input_scale", "input_range", "input_dtype", "modality"):
        del old["region_encoder"][key]
    assert XTConfig.from_dict(old) == model_config("test_convnext_none")


def test_an_unknown_crs_is_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "unknown.tif"
    keys = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32799]  # EPSG:32799: none
    tifffile.imwrite(
        path,
        np.zeros((64, 64), np.uint8),
        extratags=[
            (33550, 12, 3, (10.0, 10.0, 0.0)),
            (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5e6, 0.0)),
            (34735, 3, len(keys), keys),
        ],
    )
    with pytest.raises(InputError, match="unknown.tif: its CRS code 32799 is unknown"):
        open_image(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown.tif" in err[0] and "gdal_edit.py -a_srs" in err[0]


def test_a_truncated_geotiff_is_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    path = _geotiff(
        tmp_path / "cut.tif", _bands(), nodata=0, tiled=True, blockxsize=64, blockysize=64
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    model = _model_file(tmp_path, region_encoder={"in_chans": 2})
    assert _infer(path, model, tmp_path / "out.zarr") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.tif is truncated or damaged" in err[0] and "(fix: " in err[0]
    cog = _geotiff(tmp_path / "cog.tif", _bands(2, 256, 256), driver="COG", blocksize=64)
    data = cog.read_bytes()
    cog.write_bytes(data[: len(data) * 3 // 4])  # a COG's directories come first, its tiles last
    assert main(["info", str(cog)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cog.tif is truncated" in err[0] and "(fix: " in err[0]
