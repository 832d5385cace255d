"""Whole-slide readers behind ``open_image``: OpenSlide formats, DICOM WSI (wsidicom), SVS.

Fixtures come from third-party writers: libvips (``vips tiffsave --tile --pyramid``: a generic
tiled TIFF), wsidicom (a DICOM WSI series, its pyramid and label written by ``WsiDicom.save``
from an array wrapped as wsidicom ``ImageData`` by :mod:`xt_engine.io.dicom_writer`), tifffile
(an SVS-like file with Aperio metadata; a Philips-like TIFF that only OpenSlide reads). Each is
read (exact where lossless, within JPEG error otherwise), run through ``xt infer`` and its
metadata checked in the store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from xt_engine.cli import main
from xt_engine.errors import InputError
from xt_engine.io import SLIDE_SUFFIXES, TIFF_SUFFIXES, open_image
from xt_engine.io.dicom_writer import write_dicom_wsi
from xt_engine.io.openslide_reader import open_openslide, rgba_on_white

H, W = 320, 448  # not a multiple of the 256 px tiles nor of the test model's 64 px regions
JPEG_MEAN, JPEG_MAX = 2.0, 40  # mean / max abs error of a quality-95 JPEG of the smooth image


def smooth_rgb(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 of smooth sinusoids (JPEG keeps them within a few levels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        fy, fx = rng.uniform(0.01, 0.04, 2)
        py, px = rng.uniform(0, 6, 2)
        out[..., c] = np.clip(128 + 90 * np.sin(yy * fy + py) * np.cos(xx * fx + px), 0, 255)
    return out


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return smooth_rgb()


@pytest.fixture(scope="module")
def vips_tiff(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> Path:
    if shutil.which("vips") is None:
        pytest.skip("libvips' CLI (vips) is not installed: apt-get install libvips-tools")
    folder = tmp_path_factory.mktemp("vips")
    Image.fromarray(image).save(folder / "in.png")
    out = folder / "generic.tif"
    subprocess.run(
        ["vips", "tiffsave", str(folder / "in.png"), str(out), "--tile", "--pyramid"]
        + ["--tile-width", "128", "--tile-height", "128", "--xres", "2000", "--yres", "2000"],
        check=True,
    )  # xres / yres in pixels per mm: 0.5 um pixels
    return out


@pytest.fixture(scope="module")
def svs_like(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("svs") / "slide.svs"
    head = "Aperio Image Library v12.0.15 \r\n"
    jpeg = {"compression": "jpeg", "compressionargs": {"level": 95}, "photometric": "rgb"}
    label = np.full((40, 60, 3), 30, np.uint8)
    with tifffile.TiffWriter(path) as tif:
        desc = f"{head}{W}x{H} [0,0 {W}x{H}] (256x256) JPEG/RGB Q=95|AppMag = 40|MPP = 0.25"
        tif.write(image, tile=(256, 256), description=desc, metadata=None, **jpeg)
        tif.write(image[::8, ::8], photometric="rgb", description=f"{head}thumbnail", metadata=None)
        tif.write(image[::2, ::2], tile=(256, 256), description=head, metadata=None, **jpeg)
        tif.write(
            label, photometric="rgb", subfiletype=1, description=f"{head}label", metadata=None
        )
        tif.write(
            label, photometric="rgb", subfiletype=9, description=f"{head}macro", metadata=None
        )
    return path


def _philips_xml(levels: int) -> str:
    attr = '<Attribute Name="{}" Group="0x0" Element="0x0" PMSVR="{}">{}</Attribute>'
    spacing = [
        '<DataObject ObjectType="PixelDataRepresentation">'
        + attr.format("DICOM_PIXEL_SPACING", "IDoubleArray", f"&quot;{s}&quot; &quot;{s}&quot;")
        + attr.format("PIIM_PIXEL_DATA_REPRESENTATION_NUMBER", "IUInt32", k)
        + "</DataObject>"
        for k, s in ((k, f"{0.00025 * 2**k:.6f}") for k in range(levels))
    ]
    sequence = attr.format(
        "PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE",
        "IDataObjectArray",
        f"<Array>{''.join(spacing)}</Array>",
    )
    scanned = (
        '<DataObject ObjectType="DPScannedImage">'
        + attr.format("PIM_DP_IMAGE_TYPE", "IString", "WSI")
        + sequence
        + "</DataObject>"
    )
    images = attr.format("PIM_DP_SCANNED_IMAGES", "IDataObjectArray", f"<Array>{scanned}</Array>")
    head = '<?xml version="1.0" encoding="UTF-8" ?>\n<DataObject ObjectType="DPUfsImport">'
    return f"{head}{images}</DataObject>"


@pytest.fixture(scope="module")
def philips_like(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> Path:
    """A Philips-style TIFF (Software "Philips...", DPUfsImport XML): OpenSlide's, not tifffile's."""
    path = tmp_path_factory.mktemp("philips") / "slide.tiff"
    common = {
        "tile": (128, 128),
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": 95},
        "software": "Philips DP v1.0",
        "metadata": None,
    }
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, description=_philips_xml(2), **common)
        tif.write(image[::2, ::2], subfiletype=1, **common)
    return path


def _write_dicom(image: np.ndarray, folder: Path) -> Path:
    """A DICOM WSI series written by wsidicom's ``WsiDicom.save`` (level 0 from ``image``,
    uncompressed; lower levels and the label made by wsidicom)."""
    label = np.full((40, 60, 3), 30, np.uint8)
    write_dicom_wsi(image, folder, tile=128, mpp=0.25, manufacturer="xT test scanner", label=label)
    return folder


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> Path:
    return _write_dicom(image, tmp_path_factory.mktemp("dicom") / "slide")


def _chw(array: np.ndarray) -> np.ndarray:
    return array.transpose(2, 0, 1)


def _assert_jpeg_close(got: np.ndarray, want: np.ndarray) -> None:
    error = np.abs(got.astype(int) - want.astype(int))
    assert got.shape == want.shape and error.mean() <= JPEG_MEAN and error.max() <= JPEG_MAX


def test_a_vips_generic_tiff_reads_the_same_through_tifffile_and_openslide(
    vips_tiff: Path, image: np.ndarray
) -> None:
    source = open_image(vips_tiff)  # the rule: tifffile reads generic tiled TIFFs itself
    assert (source.metadata["format"], source.metadata["vendor"]) == ("tiff", "generic-tiff")
    slide = open_openslide(vips_tiff)
    assert (slide.metadata["format"], slide.metadata["vendor"]) == ("openslide", "generic-tiff")
    assert source.pixel_size == slide.pixel_size == pytest.approx((0.5, 0.5))
    assert slide.unit == "micrometer" and slide.axes == "yxc" and slide.dtype == np.uint8
    np.testing.assert_array_equal(slide.read(0, 0, 0, H, W), _chw(image))  # lossless
    np.testing.assert_array_equal(source.read(0, 0, 0, H, W), _chw(image))
    assert slide.num_levels == source.num_levels >= 2
    for level in range(1, slide.num_levels):  # level boxes map to level-0 locations
        h, w = slide.shape_yx(level)
        assert (h, w) == source.shape_yx(level)
        np.testing.assert_array_equal(
            slide.read(level, 7, 11, h, w), source.read(level, 7, 11, h, w)
        )
    np.testing.assert_array_equal(
        slide.read_padded(0, 300, 400, 64)[:, :20, :48], _chw(image[300:, 400:])
    )


def test_openslide_levels_index_like_numpy_and_alpha_becomes_white(
    vips_tiff: Path, image: np.ndarray
) -> None:
    level = open_openslide(vips_tiff).levels[0]
    assert level.shape == (H, W, 3) and level.dtype == np.uint8
    np.testing.assert_array_equal(level[5], image[5])
    np.testing.assert_array_equal(level[::50, ::7, 1], image[::50, ::7, 1])
    np.testing.assert_array_equal(level[..., 2], image[..., 2])
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgba[0, 1] = (200, 100, 0, 128)
    out = rgba_on_white(rgba)
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [227, 177, 127]


def test_an_svs_like_file_stays_with_tifffile_and_keeps_aperio_metadata(
    svs_like: Path, image: np.ndarray
) -> None:
    source = open_image(svs_like)
    assert (source.metadata["format"], source.metadata["vendor"]) == ("svs", "aperio")
    assert source.pixel_size == (0.25, 0.25) and source.unit == "micrometer"
    assert [source.shape_yx(k) for k in range(source.num_levels)] == [(H, W), (H // 2, W // 2)]
    _assert_jpeg_close(source.read(0, 0, 0, H, W), _chw(image))
    assert sorted(source.associated) == ["label", "macro", "thumbnail"]
    assert source.associated["label"]().shape == (40, 60, 3)
    slide = open_openslide(svs_like)  # OpenSlide reads the same pixels
    np.testing.assert_array_equal(slide.read(0, 10, 20, 200, 300), source.read(0, 10, 20, 200, 300))


def test_a_philips_like_tiff_goes_to_openslide(philips_like: Path, image: np.ndarray) -> None:
    source = open_image(philips_like)
    assert (source.metadata["format"], source.metadata["vendor"]) == ("openslide", "philips")
    assert source.pixel_size == pytest.approx((0.25, 0.25)) and source.unit == "micrometer"
    _assert_jpeg_close(source.read(0, 0, 0, H, W), _chw(image))
    _assert_jpeg_close(source.read(1, 0, 0, H // 2, W // 2), _chw(image[::2, ::2]))


def test_a_dicom_series_opens_from_its_folder_or_one_file(
    dicom_folder: Path, image: np.ndarray
) -> None:
    source = open_image(dicom_folder)
    assert (source.metadata["format"], source.metadata["vendor"]) == ("dicom", "xT test scanner")
    assert source.pixel_size == pytest.approx((0.25, 0.25)) and source.unit == "micrometer"
    assert [source.shape_yx(k) for k in range(source.num_levels)] == [(H, W), (160, 224), (80, 112)]
    np.testing.assert_array_equal(source.read(0, 0, 0, H, W), _chw(image))  # uncompressed
    np.testing.assert_array_equal(source.read(0, 100, 130, 230, 300), _chw(image[100:230, 130:300]))
    assert sorted(source.associated) == ["label"]
    assert source.associated["label"]().shape == (40, 60, 3)
    one = next(p for p in dicom_folder.iterdir() if p.suffix == ".dcm")
    assert open_image(one).shape_yx(0) == (H, W)


@pytest.mark.parametrize(
    ("fixture", "fmt", "vendor", "mpp"),
    [
        ("vips_tiff", "tiff", "generic-tiff", 0.5),
        ("svs_like", "svs", "aperio", 0.25),
        ("philips_like", "openslide", "philips", 0.25),
        ("dicom_folder", "dicom", "xT test scanner", 0.25),
    ],
)
def test_xt_info_and_infer_record_format_vendor_and_pixel_size(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: Any,
    fixture: str,
    fmt: str,
    vendor: str,
    mpp: float,
) -> None:
    path: Path = request.getfixturevalue(fixture)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["vendor"], info["levels"][0]) == (fmt, vendor, [H, W])
    assert info["level_pixel_size"][0] == pytest.approx([mpp, mpp])
    assert info["level_pixel_size"][1] == pytest.approx([2 * mpp, 2 * mpp])
    assert {"crs", "nodata", "associated", "channel_names"} <= set(info)
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"vendor           {vendor}" in text and "level 1" in text
    out = tmp_path / "run.zarr"
    args = [
        "infer",
        str(path),
        "--model",
        "test_convnext_none",
        "--out",
        str(out),
        "--allow-untrained",
    ]
    assert main(args) == 0
    recorded = dict(zarr.open_group(str(out), mode="r").attrs["xt"])["source"]
    assert (recorded["format"], recorded["vendor"], recorded["unit"]) == (fmt, vendor, "micrometer")
    assert recorded["pixel_size"] == pytest.approx([mpp, mpp])
    assert recorded["shape_yx"] == [H, W]


def _one_line_exit_2(args: list[str], capsys: Any, *names: str) -> str:
    """Exit 2 with one error line naming ``names`` and its fix (``xt infer`` may print its
    progress lines before it), never a traceback."""
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"xt {args[0]}: error:")]
    assert len(errors) == 1 and "fix:" in errors[0], lines
    assert args[0] != "info" or len(lines) == 1, lines
    assert not any("Traceback" in line for line in lines), lines
    assert all(name in errors[0] for name in names), errors[0]
    return errors[0]


def _cli_both(path: Path, tmp_path: Path, capsys: Any, *names: str) -> None:
    _one_line_exit_2(["info", str(path)], capsys, *names)
    out = tmp_path / f"{path.name}.zarr"
    infer = [
        "infer",
        str(path),
        "--model",
        "test_convnext_none",
        "--out",
        str(out),
        "--allow-untrained",
    ]
    _one_line_exit_2(infer, capsys, *names)


def test_truncated_and_unreadable_slides_end_with_one_line(
    vips_tiff: Path, philips_like: Path, tmp_path: Path, capsys: Any
) -> None:
    data = vips_tiff.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    _cli_both(cut, tmp_path, capsys, "cut.tif")
    philips = philips_like.read_bytes()
    cut_philips = tmp_path / "cut_philips.tiff"
    cut_philips.write_bytes(philips[: len(philips) * 2 // 3])
    _cli_both(cut_philips, tmp_path, capsys, "cut_philips.tiff")
    mrxs = tmp_path / "slide.mrxs"  # a MIRAX index without its data folder
    mrxs.write_text("[GENERAL]\nSLIDE_VERSION = 01.02\n")
    _cli_both(mrxs, tmp_path, capsys, "slide.mrxs", "data folder")


def test_corrupt_tiles_of_an_openslide_file_end_with_one_line(
    philips_like: Path, tmp_path: Path, capsys: Any
) -> None:
    with tifffile.TiffFile(philips_like) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts  # type: ignore[union-attr]
    data = bytearray(philips_like.read_bytes())
    for offset, count in zip(offsets, counts, strict=True):
        data[offset : offset + count] = b"\x00" * count  # no JPEG markers left
    bad = tmp_path / "bad.tiff"
    bad.write_bytes(bytes(data))
    source = open_image(bad)
    with pytest.raises(InputError, match=r"bad\.tiff"):
        source.read(0, 0, 0, 64, 64)
    out = tmp_path / "run.zarr"
    infer = [
        "infer",
        str(bad),
        "--model",
        "test_convnext_none",
        "--out",
        str(out),
        "--allow-untrained",
    ]
    _one_line_exit_2(infer, capsys, "bad.tiff")


def test_missing_or_broken_dicom_instances_end_with_one_line(
    dicom_folder: Path, tmp_path: Path, capsys: Any
) -> None:
    import pydicom

    files = sorted(dicom_folder.glob("*.dcm"), key=lambda p: -p.stat().st_size)
    truncated = tmp_path / "truncated"
    shutil.copytree(dicom_folder, truncated)
    big = truncated / files[0].name
    big.write_bytes(big.read_bytes()[:5000])  # level 0's pixel data cut off
    _cli_both(truncated, tmp_path, capsys, "truncated")
    missing = tmp_path / "missing"  # level 0 gone; the others say RESAMPLED, as scanners write
    missing.mkdir()
    for path in files[1:]:
        dataset = pydicom.dcmread(path)
        if "VOLUME" in dataset.ImageType:
            dataset.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
        dataset.save_as(missing / path.name)
    line = _one_line_exit_2(["info", str(missing)], capsys, "missing")
    assert "full-resolution instance is missing" in line
    labels_only = tmp_path / "labels_only"
    labels_only.mkdir()
    label = next(
        p for p in files if "LABEL" in pydicom.dcmread(p, stop_before_pixels=True).ImageType
    )
    shutil.copy(label, labels_only / label.name)
    _one_line_exit_2(["info", str(labels_only / label.name)], capsys, label.name)


def test_a_folder_of_two_dicom_series_asks_for_one_file(
    dicom_folder: Path, image: np.ndarray, tmp_path: Path, capsys: Any
) -> None:
    other = _write_dicom(image[:200, :300], tmp_path / "other")
    both = tmp_path / "both"
    shutil.copytree(dicom_folder, both)
    for path in other.glob("*.dcm"):
        shutil.copy(path, both / path.name)
    line = _one_line_exit_2(["info", str(both)], capsys, "both")
    assert "2 DICOM series" in line
    one = next(iter(sorted(other.glob("*.dcm"), key=lambda p: -p.stat().st_size)))
    assert open_image(both / one.name).shape_yx(0) == (200, 300)


def test_the_napari_manifest_opens_every_suffix_the_engine_reads() -> None:
    import yaml

    manifest = yaml.safe_load((Path(__file__).parents[2] / "napari.yaml").read_text())
    reader = manifest["contributions"]["readers"][0]
    patterns = set(reader["filename_patterns"])
    wanted = {f"*{s}" for s in TIFF_SUFFIXES + SLIDE_SUFFIXES if s.count(".") == 1} | {"*.zarr"}
    assert wanted <= patterns, wanted - patterns
    assert reader["accepts_directories"]  # OME-Zarr stores and DICOM series folders
