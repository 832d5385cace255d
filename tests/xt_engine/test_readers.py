"""Readers behind ``open_image``: TIFF family, (OME-)Zarr, numpy / dask, and their errors.

Every case is written here with tifffile / zarr (300 x 400 px, 64-px tiles) and read back: exact
pixels of a box at level 0 and at a reduced level, axes, channels, level shapes, dtype and
pixel size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from xt_engine.errors import InputError
from xt_engine.io import ImageSource, open_image, source_from_arrays

H, W, TILE = 300, 400, (64, 64)
BOX0 = (37, 45, 201, 333)  # y0, x0, y1, x1 of level 0, across tile borders
BOX1 = (10, 20, 140, 190)  # same on the 2x-reduced level (150 x 200)


def _smooth(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> np.ndarray:
    """Smooth random content (JPEG-friendly) of ``shape`` (H, W first or last), in the dtype's
    range (0..1 for floats)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    n = int(np.prod(shape)) // (H * W)
    freq, phase = rng.uniform(0.01, 0.05, (n, 2)), rng.uniform(0, 6, (n, 2))
    planes = 0.5 + 0.25 * np.sin(freq[:, :1, None] * yy + phase[:, :1, None])
    planes = planes + 0.25 * np.cos(freq[:, 1:, None] * xx + phase[:, 1:, None])
    data = (
        planes.reshape(shape) if shape[-2:] == (H, W) else np.moveaxis(planes, 0, -1).reshape(shape)
    )
    if np.issubdtype(dtype, np.integer):
        data = data * np.iinfo(dtype).max
    return data.astype(dtype)


def _reduce(data: np.ndarray, axes: str, step: int) -> np.ndarray:
    index = tuple(slice(None, None, step) if a in "yx" else slice(None) for a in axes)
    return np.ascontiguousarray(data[index])


def _box(data: np.ndarray, axes: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """``data``'s box as (C, h, w), the layout ``ImageSource.read`` returns."""
    y0, x0, y1, x1 = box
    index = tuple({"y": slice(y0, y1), "x": slice(x0, x1)}.get(a, slice(None)) for a in axes)
    out = np.transpose(data[index], [axes.index(a) for a in "cyx" if a in axes])
    return out if "c" in axes else out[None]


def _check(source: ImageSource, levels: list[np.ndarray], axes: str, exact: bool = True) -> None:
    assert source.axes == axes and source.num_levels == len(levels)
    assert source.dtype == levels[0].dtype
    assert source.num_channels == (levels[0].shape[axes.index("c")] if "c" in axes else 1)
    for i, level in enumerate(levels):
        assert tuple(source.levels[i].shape) == level.shape
    for level, box in ((0, BOX0), (1, BOX1)):
        got = source.read(level, *box)
        want = _box(levels[level], axes, box)
        assert got.shape == want.shape and got.dtype == want.dtype
        if exact:
            np.testing.assert_array_equal(got, want)
        else:  # lossy JPEG: close to what was written
            assert np.abs(got.astype(float) - want).mean() < 3


# --------------------------------------------------------------------------------------- TIFF

# name, shape, dtype, tifffile axes -> our axes, writer kwargs
TIFF_CASES = [
    ("rgb_u8_deflate", (H, W, 3), np.uint8, "yxc", {"compression": "zlib", "photometric": "rgb"}),
    ("rgb_u8_jpeg", (H, W, 3), np.uint8, "yxc", {"compression": "jpeg", "photometric": "rgb"}),
    ("rgb_u8_raw", (H, W, 3), np.uint8, "yxc", {"photometric": "rgb"}),
    ("gray_u16_lzw", (H, W), np.uint16, "yx", {"compression": "lzw", "predictor": True}),
    ("gray_f32_zstd", (H, W), np.float32, "yx", {"compression": "zstd"}),
    ("gray_f32_deflate_pred", (H, W), np.float32, "yx", {"compression": "zlib", "predictor": True}),
    (
        "sar2_f32_last",
        (H, W, 2),
        np.float32,
        "yxc",
        {"compression": "zstd", "planarconfig": "contig", "photometric": "minisblack"},
    ),
    (
        "multi5_u16",
        (5, H, W),
        np.uint16,
        "cyx",
        {"compression": "zlib", "photometric": "minisblack"},
    ),
]


@pytest.mark.parametrize("layout", ["subifds", "pages", "ome", "bigtiff"])
@pytest.mark.parametrize("case", TIFF_CASES, ids=[c[0] for c in TIFF_CASES])
def test_tiff_pyramids_codecs_dtypes_and_channels(tmp_path: Path, case: tuple, layout: str) -> None:
    name, shape, dtype, axes, kwargs = case
    data = _smooth(shape, dtype)
    levels = [data, _reduce(data, axes, 2), _reduce(data, axes, 4)]
    path = tmp_path / f"{name}.{'ome.tif' if layout == 'ome' else 'tif'}"
    meta: dict[str, Any] = {"axes": {"yxc": "YXS", "yx": "YX", "cyx": "CYX"}[axes]}
    if layout == "ome":
        meta |= {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.75}
    with tifffile.TiffWriter(path, bigtiff=layout == "bigtiff", ome=layout == "ome") as tif:
        sub = 0 if layout == "pages" else len(levels) - 1
        tif.write(data, tile=TILE, subifds=sub, metadata=meta, **kwargs)
        for level in levels[1:]:
            tif.write(level, tile=TILE, subfiletype=1, **kwargs)
    source = open_image(path)
    _check(source, levels, axes, exact="jpeg" not in name)
    assert source.pixel_size == ((0.75, 0.5) if layout == "ome" else None)
    assert source.unit == ("micrometer" if layout == "ome" else None)
    assert source.metadata["bigtiff"] == (layout == "bigtiff")
    if "jpeg" in name:  # exactly what tifffile itself decodes
        np.testing.assert_array_equal(
            source.read(1, *BOX1), _box(tifffile.imread(path, level=1), axes, BOX1)
        )


def test_svs_like_file_levels_skip_the_thumbnail_and_give_mpp(tmp_path: Path) -> None:
    data = _smooth((H, W, 3), np.uint8)
    desc = "Aperio Image Library v12.0.15\n400x300 [0,0 400x300] (64x64) JPEG/RGB Q=90"
    path = tmp_path / "slide.svs"
    kw: dict[str, Any] = {"photometric": "rgb", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            data, tile=TILE, compression="jpeg", description=desc + "|AppMag = 40|MPP = 0.25", **kw
        )
        tif.write(data[::8, ::8].copy(), description="Aperio Image Library v12\n50x38", **kw)
        tif.write(_reduce(data, "yxc", 2), tile=TILE, compression="zlib", description=desc, **kw)
    source = open_image(path)
    assert source.metadata["format"] == "svs"
    assert source.pixel_size == (0.25, 0.25) and source.unit == "micrometer"
    assert [source.shape_yx(i) for i in range(source.num_levels)] == [(H, W), (H // 2, W // 2)]
    _check(source, [data, _reduce(data, "yxc", 2)], "yxc", exact=False)
    np.testing.assert_array_equal(source.read(1, *BOX1), _box(_reduce(data, "yxc", 2), "yxc", BOX1))
    np.testing.assert_array_equal(source.read(0, *BOX0), _box(tifffile.imread(path), "yxc", BOX0))


@pytest.mark.parametrize(
    ("resolution", "unit", "expected"),
    [
        ((10000.0, 5000.0), "CENTIMETER", (2.0, 1.0)),  # (x, y) px/cm -> (y, x) um
        ((25400.0, 25400.0 / 4), "INCH", (4.0, 1.0)),
        (None, None, None),  # tifffile's default: 1 px per (no) unit
    ],
)
def test_tiff_resolution_tags_give_micrometers(
    tmp_path: Path, resolution: Any, unit: Any, expected: Any
) -> None:
    data = _smooth((H, W), np.uint8)
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, data, resolution=resolution, resolutionunit=unit, tile=TILE)
    source = open_image(path)
    assert source.pixel_size == expected
    assert source.unit == ("micrometer" if expected else None)


def test_ome_tiff_pixel_size_units_are_converted(tmp_path: Path) -> None:
    data = _smooth((H, W), np.uint16)
    path = tmp_path / "nm.ome.tif"
    meta = {
        "PhysicalSizeX": 250,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.001,
        "PhysicalSizeYUnit": "mm",
    }
    tifffile.imwrite(path, data, ome=True, tile=TILE, metadata=meta)
    source = open_image(path)
    assert source.pixel_size == pytest.approx((1.0, 0.25)) and source.unit == "micrometer"


def test_uncompressed_stripped_tiff_is_memory_mapped(tmp_path: Path) -> None:
    data = _smooth((H, W, 3), np.uint8)
    path = tmp_path / "strip.tif"
    tifffile.imwrite(path, data)  # one uncompressed strip: one zarr chunk would be the image
    source = open_image(path)
    assert isinstance(source.levels[0], np.memmap)
    np.testing.assert_array_equal(source.read(0, *BOX0), _box(data, "yxc", BOX0))
    tifffile.imwrite(path, data, compression="zlib", rowsperstrip=16)
    np.testing.assert_array_equal(open_image(path).read(0, *BOX0), _box(data, "yxc", BOX0))


def test_tiff_without_tiff_suffix_is_sniffed(tmp_path: Path) -> None:
    data = _smooth((H, W), np.uint8)
    path = tmp_path / "scan.dat"
    tifffile.imwrite(path, data, tile=TILE)
    np.testing.assert_array_equal(open_image(path).read(0, *BOX0), _box(data, "yx", BOX0))


# --------------------------------------------------------------------------------------- Zarr


def _ome_axes(axes: str, unit: str | None = "micrometer") -> list[dict[str, Any]]:
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    out = []
    for a in axes:
        axis = {"name": a, "type": kinds[a]}
        if a in "yx" and unit:
            axis["unit"] = unit
        out.append(axis)
    return out


def _write_ome_zarr(
    store: Path,
    levels: list[np.ndarray],
    axes: str,
    paths: list[str],
    version: str,
    extra_ms: dict | None = None,
) -> None:
    zarr_format = 3 if version == "0.5" else 2
    root = zarr.open_group(str(store), mode="w", zarr_format=zarr_format)
    datasets = []
    for i, (level, p) in enumerate(zip(levels, paths, strict=True)):
        chunks = tuple(64 if a in "yx" else 1 for a in axes)
        root.create_array(p, data=level, chunks=chunks)
        scale = [0.5 * 2**i if a in "yx" else 1.0 for a in axes]
        datasets.append(
            {"path": p, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ms = {"axes": _ome_axes(axes), "datasets": datasets, "name": "img"} | (extra_ms or {})
    if version == "0.5":
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    else:
        root.attrs["multiscales"] = [ms | {"version": "0.4"}]


ZARR_CASES = [
    ("v04_cyx", "0.4", "cyx", (3, H, W), np.uint8, ["s0", "s1"]),
    ("v04_yxc", "0.4", "yxc", (H, W, 3), np.uint8, ["0", "1"]),
    ("v04_yx_f32", "0.4", "yx", (H, W), np.float32, ["scale0", "scale1"]),
    ("v05_tczyx", "0.5", "tczyx", (1, 5, 1, H, W), np.uint16, ["scale0/data", "scale1/data"]),
    ("v05_cyx_sar", "0.5", "cyx", (2, H, W), np.float32, ["s0", "s1"]),
]


@pytest.mark.parametrize("case", ZARR_CASES, ids=[c[0] for c in ZARR_CASES])
def test_ome_zarr_multiscales(tmp_path: Path, case: tuple) -> None:
    _, version, axes, shape, dtype, paths = case
    data = _smooth(shape, dtype)
    levels = [data, _reduce(data, axes, 2)]
    store = tmp_path / "image.ome.zarr"
    _write_ome_zarr(store, levels, axes, paths, version)
    source = open_image(store)
    ours = "".join(a for a in axes if a in "cyx")
    squeeze = tuple(slice(None) if a in "cyx" else 0 for a in axes)
    _check(source, [lvl[squeeze] for lvl in levels], ours)
    assert source.pixel_size == (0.5, 0.5) and source.unit == "micrometer"
    assert source.metadata["ngff_version"] == version


def test_ome_zarr_multiscale_wide_scale_and_bioformats2raw_layout(tmp_path: Path) -> None:
    data = _smooth((H, W), np.uint16)
    store = tmp_path / "b2r.zarr"
    root = zarr.open_group(str(store), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    overall = {"coordinateTransformations": [{"type": "scale", "scale": [3.0, 2.0]}]}
    _write_ome_zarr(store / "0", [data, data[::2, ::2]], "yx", ["0", "1"], "0.4", overall)
    source = open_image(store)
    assert source.pixel_size == (1.5, 1.0) and source.num_levels == 2
    np.testing.assert_array_equal(source.read(1, *BOX1), _box(data[::2, ::2], "yx", BOX1))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_bare_zarr_array(tmp_path: Path, zarr_format: int) -> None:
    data = _smooth((H, W, 3), np.uint8)
    store = tmp_path / "bare.zarr"
    zarr.create_array(str(store), data=data, chunks=(64, 64, 3), zarr_format=zarr_format)
    source = open_image(store)
    assert source.axes == "yxc" and source.num_levels == 1 and source.pixel_size is None
    np.testing.assert_array_equal(source.read(0, *BOX0), _box(data, "yxc", BOX0))


# ------------------------------------------------------------------------------ numpy / dask


def test_numpy_arrays_and_level_lists() -> None:
    rgb = _smooth((H, W, 3), np.uint8)
    five = _smooth((5, H, W), np.float32)
    assert open_image(rgb).axes == "yxc" and open_image(five).axes == "cyx"
    assert open_image(np.moveaxis(five, 0, -1)).axes == "yxc"  # (H, W, 5)
    source = open_image([rgb, _reduce(rgb, "yxc", 2)])
    _check(source, [rgb, _reduce(rgb, "yxc", 2)], "yxc")
    _check(
        open_image([five, _reduce(five, "cyx", 2)], axes="cyx"),
        [five, _reduce(five, "cyx", 2)],
        "cyx",
    )
    box = source.read(0, 0, 0, 8, 8)
    box[:] = 0  # a copy, never a view of the caller's array
    assert rgb[:8, :8].any() and box.flags.c_contiguous
    padded = source.read_padded(1, 140, 190, 16)
    assert padded.shape == (3, 16, 16) and not padded[:, 10:, :].any()
    np.testing.assert_array_equal(
        padded[:, :10, :10], _box(rgb[::2, ::2], "yxc", (140, 190, 150, 200))
    )


def test_dask_reads_only_the_chunks_of_the_requested_box() -> None:
    da = pytest.importorskip("dask.array")
    data = _smooth((H, W), np.uint16)
    computed: list[tuple[int, ...]] = []

    def block(x: np.ndarray, block_info: Any = None) -> np.ndarray:
        computed.append(tuple(block_info[0]["chunk-location"]))
        return x

    lazy = da.from_array(data, chunks=64).map_blocks(block, dtype=data.dtype)
    source = source_from_arrays([lazy, lazy[::2, ::2]], name="lazy")
    np.testing.assert_array_equal(source.read(0, 70, 130, 120, 190), data[70:120, 130:190][None])
    assert set(computed) == {(1, 2)}, computed  # rows 64..127, cols 128..191: one chunk
    computed.clear()
    np.testing.assert_array_equal(source.read(1, *BOX1), _box(data[::2, ::2], "yx", BOX1))
    assert len(set(computed)) < (H // 64 + 1) * (W // 64 + 1)


# ------------------------------------------------------------------------------------- errors


def test_missing_text_and_unknown_files_raise_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist.*fix: check the path"):
        open_image(tmp_path / "nope.tif")
    fake = tmp_path / "fake.tif"
    fake.write_text("not a tiff at all")
    with pytest.raises(InputError, match=r"fake\.tif is not a readable TIFF.*fix:"):
        open_image(fake)
    other = tmp_path / "photo.webp"
    other.write_bytes(b"RIFF" + bytes(32))
    with pytest.raises(InputError, match="unknown image format.*fix: use a TIFF"):
        open_image(other)
    broken = tmp_path / "photo.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    with pytest.raises(InputError, match=r"photo\.png is not a readable PNG / JPEG.*fix:"):
        open_image(broken)
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="not a zarr store"):
        open_image(tmp_path / "folder")
    with pytest.raises(InputError, match="not an array"):
        open_image([[1, 2], [3, 4]])
    with pytest.raises(InputError, match="largest to smallest"):
        open_image([np.zeros((8, 8)), np.zeros((16, 16))])
    with pytest.raises(InputError, match="level 3 does not exist"):
        open_image(np.zeros((8, 8))).read(3, 0, 0, 4, 4)


def test_truncated_tiff_raises_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _smooth((H, W, 3), np.uint8), tile=TILE, compression="zlib")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match=r"cut\.tif.*truncated.*fix:"):
        open_image(path).read(0, 0, 0, H, W)


def test_corrupt_tiles_raise_an_input_error_at_read(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, _smooth((H, W, 3), np.uint8), tile=TILE, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[7], tif.pages[0].databytecounts[7]
    blob = bytearray(path.read_bytes())
    blob[offset : offset + count] = bytes(count)  # tile 7 (row 1, col 0) is garbage now
    path.write_bytes(bytes(blob))
    source = open_image(path)  # the file structure is fine
    source.read(0, 0, 0, 64, 64)  # an intact tile still reads
    with pytest.raises(InputError, match=r"cannot read level 0.*corrupt\.tif.*fix: check"):
        source.read(0, 64, 0, 128, 64)


def test_non_singleton_t_or_z_axes_are_refused(tmp_path: Path) -> None:
    stack = np.zeros((3, 2, 32, 32), np.uint8)
    tifffile.imwrite(tmp_path / "zstack.tif", stack, metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match=r"Z=3.*fix: export one 2-D plane"):
        open_image(tmp_path / "zstack.tif")
    store = tmp_path / "time.ome.zarr"
    _write_ome_zarr(store, [np.zeros((4, 1, 1, 32, 32), np.uint8)], "tczyx", ["0"], "0.5")
    with pytest.raises(InputError, match=r"non-singleton axes t=4.*fix: export a single 2-D"):
        open_image(store)


def test_a_fifo_is_refused_before_it_is_opened(tmp_path) -> None:
    """Opening a FIFO blocks until a writer comes: it must be refused, not opened."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "image.tif"
    os.mkfifo(fifo)
    for command in (
        ["info", str(fifo)],
        ["infer", str(fifo), "--model", "xt_demo_sar", "--out", str(tmp_path / "o.zarr")],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "xt_engine.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "not a regular file" in result.stderr and "Traceback" not in result.stderr
