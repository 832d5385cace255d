"""Physical resolution: the level closest to a pixel size (``xt infer --mpp``, the model's
``tiling.pixel_size``), a resampled level when none is within 10% (checked against Pillow's
resize of the whole image), honest units (a 72-dpi tag is no pixel size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from xt_engine import create_model
from xt_engine.cli import main
from xt_engine.config import XTConfig
from xt_engine.errors import InputError, XTWarning
from xt_engine.io import open_image
from xt_engine.io.resample import with_resampled_level
from xt_engine.models.registry import model_config
from xt_engine.runtime.resolution import convert, parse_pixel_size, plan_resolution
from xt_engine.weights.checkpoint import save_checkpoint


def _pyramid(path: Path, size: int = 512, mpp: float = 0.25) -> Path:
    """An OME-TIFF, 1 channel uint8, levels at mpp, 2 mpp, 4 mpp (SubIFDs)."""
    data = np.random.default_rng(1).integers(0, 256, (size, size), dtype=np.uint8)
    meta = {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp, "axes": "YX"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(data, subifds=2, tile=(64, 64), metadata=meta)
        for k in (2, 4):
            tif.write(data[::k, ::k], subfiletype=1, tile=(64, 64))
    return path


def _model(tmp_path: Path, **tiling: Any) -> Path:
    data = model_config("test_convnext_none").to_dict()
    data["region_encoder"]["in_chans"] = 1
    data["tiling"] |= tiling
    return save_checkpoint(
        create_model(XTConfig.from_dict(data)).eval(), tmp_path / "m.safetensors"
    )


def _run(image: Path, model: Path, out: Path, *extra: str) -> dict[str, Any]:
    assert main(["infer", str(image), "--model", str(model), "--out", str(out), *extra]) == 0
    root = zarr.open_group(str(out), mode="r")
    return dict(root.attrs["xt"]) | {"labels_shape": root["labels/segmentation/0"].shape}


def test_mpp_picks_the_closest_level_or_resamples(tmp_path: Path, capsys) -> None:
    image, model = _pyramid(tmp_path / "slide.ome.tif"), _model(tmp_path)
    source = open_image(image)
    assert source.num_levels == 3 and source.pixel_size == (0.25, 0.25)
    xt = _run(image, model, tmp_path / "a.zarr", "--mpp", "0.5")
    assert (xt["level"], xt["resampled"], xt["labels_shape"]) == (1, False, (256, 256))
    assert xt["effective_pixel_size"] == [0.5, 0.5] and xt["pixel_unit"] == "micrometer"
    xt = _run(image, model, tmp_path / "b.zarr", "--mpp", "0.53")  # within 10% of level 1
    assert (xt["level"], xt["resampled"]) == (1, False)
    xt = _run(image, model, tmp_path / "c.zarr", "--mpp", "0.7")
    side = round(512 * 0.25 / 0.7)  # 183
    assert xt["resampled"] is True and xt["resampled_from"] == 1
    assert xt["labels_shape"] == (side, side) and xt["level"] == 2  # between levels 1 and 2
    assert xt["effective_pixel_size"] == pytest.approx([0.25 * 512 / side] * 2)
    scale = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")["labels/segmentation"].attrs["ome"][
        "multiscales"
    ][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == pytest.approx(xt["effective_pixel_size"])
    assert "resampled" in capsys.readouterr().err
    xt = _run(image, model, tmp_path / "d.zarr", "--pixel-size", "1um")
    assert (xt["level"], xt["labels_shape"]) == (2, (128, 128))


def test_the_model_pixel_size_decides_unless_the_level_is_given(tmp_path: Path) -> None:
    image = _pyramid(tmp_path / "slide.ome.tif")
    model = _model(tmp_path, pixel_size=1.0, pixel_unit="micrometer")
    assert _run(image, model, tmp_path / "a.zarr")["level"] == 2
    assert _run(image, model, tmp_path / "b.zarr", "--level", "0")["level"] == 0
    assert (
        main(
            [
                "infer",
                str(image),
                "--model",
                str(model),
                "--out",
                str(tmp_path / "c.zarr"),
                "--level",
                "1",
                "--mpp",
                "0.5",
            ]
        )
        == 2
    )


def test_no_pixel_size_runs_level_0_with_a_warning_never_invented(tmp_path: Path, capsys) -> None:
    image = tmp_path / "plain.tif"
    tifffile.imwrite(
        image, np.zeros((128, 128), np.uint8), resolution=(72, 72), resolutionunit="INCH"
    )
    assert open_image(image).pixel_size is None  # 72 dpi: a screen default, not 352.8 um
    model = _model(tmp_path, pixel_size=0.5, pixel_unit="micrometer")
    xt = _run(image, model, tmp_path / "a.zarr")
    assert (xt["level"], xt["effective_pixel_size"], xt["pixel_unit"]) == (0, None, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xt infer: warning: plain.tif states no pixel")
    axes = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["labels/segmentation"].attrs["ome"][
        "multiscales"
    ][0]["axes"]
    assert all("unit" not in axis for axis in axes)
    assert (
        main(
            [
                "infer",
                str(image),
                "--model",
                str(model),
                "--out",
                str(tmp_path / "b.zarr"),
                "--mpp",
                "0.5",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "states no pixel size" in err[0] and "--level" in err[0]
    with pytest.warns(XTWarning, match="running at level 0"):
        plan_resolution(
            open_image(image),
            XTConfig.from_dict({"tiling": {"pixel_size": 0.5, "pixel_unit": "micrometer"}}).tiling,
        )


@pytest.mark.parametrize(
    ("dpi", "unit", "expected"),
    [
        (72.0, "INCH", None),
        (96.0, "INCH", None),
        (300.0, "INCH", None),
        (72.0 / 2.54, "CENTIMETER", None),  # 72 dpi stated per centimetre
        (50.0, "CENTIMETER", None),  # 200 um: no microscope's
        (20000.0, "CENTIMETER", 0.5),
        (25400.0 / 0.25, "INCH", 0.25),
    ],
)
def test_resolution_tags_count_only_when_plausibly_a_microscope(
    tmp_path: Path, dpi: float, unit: str, expected: float | None
) -> None:
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint8), resolution=(dpi, dpi), resolutionunit=unit)
    source = open_image(path)
    assert source.pixel_size == (None if expected is None else pytest.approx((expected,) * 2))


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_resampled_reads_equal_pillow_on_the_whole_image(dtype: Any) -> None:
    rng = np.random.default_rng(2)
    image = (rng.random((2, 301, 257)) * 60000).astype(dtype)
    source = open_image(image, axes="cyx")
    for shape in [(107, 92), (450, 390)]:  # shrink (area-like) and enlarge (bilinear)
        resampled, level = with_resampled_level(source, 0, shape)
        reference = np.stack(
            [
                np.asarray(
                    Image.fromarray(c.astype(np.float32), mode="F").resize(
                        shape[::-1], Image.Resampling.BILINEAR
                    )
                )
                for c in image
            ]
        )
        for box in [(0, 0, 17, 13), (5, 7, 40, 60), (shape[0] - 20, shape[1] - 9, *shape)]:
            got = resampled.read(level, *box).astype(np.float64)
            want = reference[:, box[0] : box[2], box[1] : box[3]]
            atol = 0.5001 if dtype == np.uint16 else 1e-2  # rounding to uint16; float32 sums
            np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)


def test_a_resampled_level_reads_only_its_box_and_ignores_nodata() -> None:
    class Counting:
        def __init__(self, array: np.ndarray) -> None:
            self.array, self.shape, self.dtype, self.boxes = array, array.shape, array.dtype, []

        def __getitem__(self, key: Any) -> np.ndarray:
            self.boxes.append(key)
            return self.array[key]

    data = np.full((400, 400), 100, np.uint16)
    data[:, :200] = 0  # nodata on the left half
    level = Counting(data)
    source = open_image([level], axes="yx")
    source.nodata = 0.0
    resampled, index = with_resampled_level(source, 0, (200, 200))
    box = resampled.read(index, 50, 90, 60, 110)  # straddles the nodata edge at x = 100
    y, x = level.boxes[-1]
    assert (y.stop - y.start, x.stop - x.start) <= (24, 44)  # the box's support only
    # output x 99 is centred on input x 199, its support reaches x 200 (data): data only
    assert (box[0, :, :9] == 0).all() and (box[0, :, 9:] == 100).all()  # never a blend with 0


def test_pixel_size_units_parse_and_convert() -> None:
    assert parse_pixel_size("0.5") == (0.5, "micrometer")
    assert parse_pixel_size("10m") == (10.0, "meter")
    assert parse_pixel_size("10", "meter") == (10.0, "meter")
    assert parse_pixel_size("250 nm") == (250.0, "nanometer")
    assert parse_pixel_size("1e-4deg") == (1e-4, "degree")
    with pytest.raises(InputError, match="not a positive size"):
        parse_pixel_size("10 parsecs")
    assert convert(10.0, "meter", "micrometer") == pytest.approx(1e7)
    assert convert(1.0, "degree", "meter") is None


def test_a_scene_in_metres_resamples_to_a_coarser_pixel(tmp_path: Path) -> None:
    import rasterio
    from rasterio.transform import Affine

    path = tmp_path / "scene.tif"
    data = np.random.default_rng(0).integers(1, 1000, (1, 128, 192)).astype(np.uint16)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=192,
        height=128,
        count=1,
        dtype="uint16",
        crs="EPSG:32633",
        transform=Affine(10.0, 0.0, 5e5, 0.0, -10.0, 5e6),
    ) as ds:
        ds.write(data)
    model = _model(tmp_path)
    xt = _run(path, model, tmp_path / "a.zarr", "--pixel-size", "20", "--pixel-unit", "meter")
    assert xt["labels_shape"] == (64, 96) and xt["effective_pixel_size"] == [20.0, 20.0]
    assert xt["georeference"]["transform"] == [10.0, 0.0, 5e5, 0.0, -10.0, 5e6]  # level 0's
