"""Pixels without data and regions without foreground: NaN / Inf / nodata never spread through
the context, and a foreground run encodes only the regions it keeps, each at its true grid
position (xt_engine.runtime.foreground, RegionReader's missing-pixel masks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from xt_engine import InputError, RegionDone, create_model, run_inference
from xt_engine.io import ImageSource
from xt_engine.models import model_config
from xt_engine.runtime.foreground import foreground_regions, otsu_threshold
from xt_engine.runtime.schedule import forward_regions
from xt_engine.store.result_store import FOREGROUND_PATH, LABELS_PATH
from xt_engine.tiling import RegionGrid


def _model(name: str = "test_convnext_txl_bidir", chunk: int = 4) -> torch.nn.Module:
    cfg = model_config(name).to_dict()
    cfg["context_encoder"]["chunk_regions"] = chunk
    torch.manual_seed(0)
    return create_model(cfg).eval()


def _labels(image: np.ndarray, model: torch.nn.Module, **kw) -> np.ndarray:
    return _labels_of_source(ImageSource([image], "yxc", name="img"), model, **kw)


def _float_image(h: int = 256, w: int = 320) -> np.ndarray:
    return np.random.default_rng(3).random((h, w, 3), dtype=np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e38])
def test_one_bad_pixel_changes_only_its_own_pixel(bad: float) -> None:
    """Today's failure: one NaN pixel in a bidirectional run turned 53 of 64 regions to
    background. Now the bad pixel reads as padding (pad_value) and is labelled background;
    every other pixel is what a run on the image with that pixel set to pad_value gives."""
    model = _model()
    image = _float_image()
    clean = image.copy()
    clean[100, 150] = model.config.tiling.pad_value  # float images: scale 1
    image[100, 150, 1] = bad
    got = _labels(image, model, batch_size=8)
    want = _labels(clean, model, batch_size=8)
    assert got[100, 150] == 0
    got[100, 150] = want[100, 150]
    np.testing.assert_array_equal(got, want)


def test_nodata_value_is_masked_and_its_tokens_leave_the_context() -> None:
    """A block of nodata pixels (every channel) gives the same labels elsewhere as a run
    where the block is padding, and background inside it."""
    model = _model("test_convnext_txl")
    image = (np.random.default_rng(4).random((256, 256, 3)) * 1000).astype(np.float32)
    image[64:96, 0:64] = -9999.0  # half a region, whole tokens (stride 16)
    source = ImageSource([image], "yxc", nodata=-9999.0, name="scene")
    got = _labels_of_source(source, model)
    assert (got[64:96, 0:64] == 0).all()
    padded = image.copy()
    padded[64:96, 0:64] = model.config.tiling.pad_value
    reference = _labels_of_source(ImageSource([padded], "yxc", name="ref"), model)
    outside = np.ones(got.shape, bool)
    outside[64:96, 0:64] = False
    # the context leaves out the block's tokens in the masked run (not in the reference): the
    # labels outside it may move, but not by much
    assert (got[outside] == reference[outside]).mean() > 0.95


def _labels_of_source(source: ImageSource, model: torch.nn.Module, **kw) -> np.ndarray:
    """The run's label image; 255 where no region reported labels."""
    h, w = source.shape_yx(0)
    out = np.full((h, w), 255, dtype=np.uint8)
    kw.setdefault("batch_size", 4)
    for e in run_inference(source, model, **kw):
        if isinstance(e, RegionDone) and e.labels is not None:
            r = e.region
            out[r.y0 : r.y0 + r.height, r.x0 : r.x0 + r.width] = e.labels
    return out


def test_all_nan_image_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nan.npy"
    np.save(path, np.full((128, 128, 3), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="no region of .* holds pixels with data"):
        list(run_inference(np.load(path), _model("test_convnext_txl")))


def _scene_with_empty_regions() -> tuple[ImageSource, np.ndarray]:
    """A 5 x 6 region scene (64 px regions) whose regions in ``empty`` are all nodata."""
    image = (np.random.default_rng(5).random((320, 384, 3)) * 100 + 1).astype(np.float32)
    empty = np.zeros((5, 6), bool)
    empty[0, :] = True
    empty[2, 1:4] = True
    empty[4, 5] = True
    for r, c in zip(*np.nonzero(empty), strict=True):
        image[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] = 0.0
    return ImageSource([image], "yxc", nodata=0.0, name="scene"), empty.reshape(-1)


def test_nodata_regions_are_skipped_and_recorded(tmp_path: Path) -> None:
    source, empty = _scene_with_empty_regions()
    grid = RegionGrid.for_image(source.shape_yx(0), 64)
    plan = foreground_regions(source, 0, grid, "auto")
    assert plan.method == "nodata"
    np.testing.assert_array_equal(plan.run, ~empty)
    model = _model("test_convnext_txl")
    out = tmp_path / "out.zarr"
    encoded: list[int] = []
    handle = model.region_encoder.register_forward_hook(
        lambda _m, inputs, _o: encoded.append(int(inputs[0].shape[0]))
    )
    try:
        list(run_inference(source, model, output=out, batch_size=8))
    finally:
        handle.remove()
    assert sum(encoded) == int((~empty).sum())  # skipped regions are never encoded
    root = zarr.open_group(str(out), mode="r")
    xt = root.attrs["xt"]
    assert xt["complete"] is True
    assert xt["foreground"]["method"] == "nodata"
    assert xt["foreground"]["regions_skipped"] == int(empty.sum())
    assert xt["foreground"]["regions_run"] == int((~empty).sum())
    np.testing.assert_array_equal(root[FOREGROUND_PATH][:], ~empty)
    np.testing.assert_array_equal(root["xt_done"][:], np.ones(len(empty), bool))
    labels = root[f"{LABELS_PATH}/0"][:]
    assert (labels[0:64] == 0).all() and (labels[128:192, 64:256] == 0).all()


def test_foreground_run_is_the_context_over_the_kept_regions_at_their_positions() -> None:
    """Streaming with skipped regions == the in-memory forward over the kept regions alone,
    with their true (row, col): the context sees exactly them, in raster order, and any batch
    size gives that answer."""
    source, empty = _scene_with_empty_regions()
    model = _model("test_convnext_txl", chunk=3)
    grid = RegionGrid.for_image(source.shape_yx(0), 64)
    kept = [i for i in range(len(grid)) if not empty[i]]
    pixels = torch.stack(
        [torch.from_numpy(source.read_padded(0, grid.region(i).y0, grid.region(i).x0, 64))
         for i in kept]
    )[None].float()
    rc = torch.tensor([[grid.region(i).row, grid.region(i).col] for i in kept])
    with torch.inference_mode():
        logits = forward_regions(model, pixels, rc).logits
    want = logits.argmax(dim=1).numpy().astype(np.uint8)
    for batch in (1, 8):
        got = {
            e.region.index: e.labels
            for e in run_inference(source, model, batch_size=batch)
            if isinstance(e, RegionDone)
        }
        assert sorted(got) == kept
        for n, i in enumerate(kept):
            np.testing.assert_array_equal(got[i], want[n], err_msg=f"region {i} batch {batch}")


def test_resume_refuses_another_foreground(tmp_path: Path) -> None:
    source, _ = _scene_with_empty_regions()
    model = _model("test_convnext_txl")
    out = tmp_path / "out.zarr"
    run = run_inference(source, model, output=out, batch_size=4)
    for event in run:  # stop after the first step: an interrupted store
        if isinstance(event, RegionDone):
            break
    run.close()
    with pytest.raises(InputError, match="foreground differs"):
        list(run_inference(source, model, output=out, resume=True, foreground="none"))


def _slide(tissue: np.ndarray, size: int = 64) -> ImageSource:
    """An RGB uint8 brightfield-like slide: white glass, pink noisy tissue on ``tissue``
    (rows, cols of regions), with a micrometre pixel size and a 4x-smaller level."""
    rng = np.random.default_rng(6)
    rows, cols = tissue.shape
    image = np.full((rows * size, cols * size, 3), 240, np.uint8)
    image += rng.integers(0, 12, image.shape, dtype=np.uint8)
    for r, c in zip(*np.nonzero(tissue), strict=True):
        block = image[r * size : r * size + size // 2, c * size : c * size + size // 2]
        block[:] = (rng.random(block.shape) * 60 + [170, 90, 140]).astype(np.uint8)
    low = image[::4, ::4].copy()
    return ImageSource([image, low], "yxc", pixel_size=(0.5, 0.5), unit="micrometer")


def test_otsu_keeps_the_regions_with_tissue() -> None:
    tissue = np.zeros((4, 5), bool)
    tissue[1, 1:3] = tissue[3, 4] = True
    source = _slide(tissue)
    plan = foreground_regions(source, 0, RegionGrid.for_image(source.shape_yx(0), 64), "auto")
    assert plan.method == "otsu" and plan.details["level"] == 1
    np.testing.assert_array_equal(plan.run, tissue.reshape(-1))
    photo = ImageSource([source.levels[0]], "yxc")  # no pixel size: a photo, nothing skipped
    assert foreground_regions(photo, 0, RegionGrid.for_image(photo.shape_yx(0), 64)).method == (
        "none"
    )


def test_otsu_threshold_splits_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(60, 5, 1000), rng.normal(200, 5, 3000)])
    assert 110 < otsu_threshold(values) < 150  # the middle of the gap between the modes


def test_mask_file_at_another_resolution(tmp_path: Path) -> None:
    """A user mask (nonzero = foreground) at a quarter of the image's size picks the regions
    it covers; through the CLI it is recorded in the store."""
    from PIL import Image

    image = np.random.default_rng(7).integers(0, 255, (256, 320, 3), dtype=np.uint8)
    tif = tmp_path / "img.tif"
    import tifffile

    tifffile.imwrite(tif, image)
    mask = np.zeros((64, 80), np.uint8)
    mask[16:32, 20:40] = 1  # image rows 64:128, cols 80:160 -> regions (1, 1) and (1, 2)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.zarr"
    proc = subprocess.run(
        [sys.executable, "-m", "xt_engine.cli", "infer", str(tif), "--model",
         "test_convnext_txl", "--allow-untrained", "--out", str(out),
         "--foreground", str(tmp_path / "mask.png")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    xt = json.loads((out / "zarr.json").read_text())["attributes"]["xt"]
    assert xt["foreground"]["method"] == "mask"
    assert xt["foreground"]["regions_run"] == 2
    ran = zarr.open_group(str(out), mode="r")[FOREGROUND_PATH][:]
    assert list(np.flatnonzero(ran)) == [6, 7]


def test_unknown_foreground_is_one_line(tmp_path: Path) -> None:
    image = tmp_path / "img.tif"
    import tifffile

    tifffile.imwrite(image, np.zeros((64, 64, 3), np.uint8))
    proc = subprocess.run(
        [sys.executable, "-m", "xt_engine.cli", "infer", str(image), "--model",
         "test_convnext_txl", "--allow-untrained", "--out", str(tmp_path / "o.zarr"),
         "--foreground", "tissue"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--foreground 'tissue'" in proc.stderr


def test_the_store_counts_the_pixels_labelled_for_want_of_data(tmp_path: Path) -> None:
    image = (np.random.default_rng(8).random((128, 192, 3)) * 10 + 1).astype(np.float32)
    image[10:20, 30:60, 0] = np.nan  # 300 pixels, one channel is enough
    out = tmp_path / "out.zarr"
    list(run_inference(image, _model("test_convnext_txl"), output=out))
    xt = zarr.open_group(str(out), mode="r").attrs["xt"]
    assert xt["complete"] is True and xt["missing_pixels"] == 300
    labels = zarr.open_group(str(out), mode="r")[f"{LABELS_PATH}/0"][:]
    assert (labels[10:20, 30:60] == 0).all()
