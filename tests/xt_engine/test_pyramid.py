"""The label pyramid is built chunk by chunk as regions complete, in any order, after a cancel
and after a resume; every level equals level 0 subsampled."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from xt_engine.store.pyramid import LabelPyramid
from xt_engine.tiling import RegionGrid

SHAPE = (1100, 900)
TILE = 48  # 64 px regions with 8 px overlap step by 48


def _levels(depth: int = 3, store: object = None) -> list[zarr.Array]:
    """In memory (zarr slicing), or with a local directory ``store`` (whole chunk files)."""
    root = zarr.open_group(store or zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    levels, shape = [], SHAPE
    for k in range(depth):
        levels.append(root.create_array(str(k), shape=shape, chunks=(TILE, TILE), dtype="uint8"))
        shape = (-(-shape[0] // 2), -(-shape[1] // 2))
    return levels


def _grid() -> RegionGrid:  # an ROI off the chunk grid
    return RegionGrid.for_image(SHAPE, 64, roi=(37, 50, 1000, 870), overlap=8)


def _paint(level0: zarr.Array, grid: RegionGrid, indices, rng) -> list:
    regions = [grid.region(i) for i in indices]
    for r in regions:
        level0[r.y0 : r.y1, r.x0 : r.x1] = rng.integers(1, 250, (r.height, r.width), np.uint8)
    return regions


def _assert_subsampled(levels: list[zarr.Array]) -> None:
    level0 = levels[0][:]
    for k in range(1, len(levels)):
        np.testing.assert_array_equal(levels[k][:], level0[:: 2**k, :: 2**k], err_msg=f"level {k}")


@pytest.mark.parametrize("store", ["memory", "local"])
@pytest.mark.parametrize("order", ["raster", "shuffled"])
def test_every_level_is_level0_subsampled_whatever_the_order(order: str, store, tmp_path) -> None:
    rng = np.random.default_rng(0)
    levels, grid = _levels(store=str(tmp_path / "p.zarr") if store == "local" else None), _grid()
    pyramid = LabelPyramid(levels, grid, np.zeros(len(grid), bool))
    assert all((f is not None) == (store == "local") for f in pyramid._files)
    indices = np.arange(len(grid))
    if order == "shuffled":
        rng.shuffle(indices)
    for batch in np.array_split(indices, len(grid) // 5):
        pyramid.update(_paint(levels[0], grid, batch, rng))
    assert pyramid.done.all()
    _assert_subsampled(levels)


def test_chunks_wait_for_all_their_regions() -> None:
    rng = np.random.default_rng(1)
    levels, grid = _levels(), _grid()
    pyramid = LabelPyramid(levels, grid, np.zeros(len(grid), bool))
    pyramid.update(_paint(levels[0], grid, range(grid.cols), rng))  # the first region row
    # level-1 chunks cover 96 level-0 rows from row 0; the ROI starts at 37 and a region row is
    # 48 px high, so the first chunk row still waits for region row 1: nothing built yet
    assert not levels[1][:].any()
    pyramid.update(_paint(levels[0], grid, range(grid.cols, 2 * grid.cols), rng))
    assert levels[1][: 96 // 2].any() and not levels[1][96 // 2 :].any()


def test_cancel_flush_then_resume_catch_up_complete_the_pyramid() -> None:
    rng = np.random.default_rng(2)
    levels, grid = _levels(), _grid()
    first = int(len(grid) * 0.4)
    pyramid = LabelPyramid(levels, grid, np.zeros(len(grid), bool))
    pyramid.update(_paint(levels[0], grid, range(first), rng))
    pyramid.flush()  # a cancelled run: the partly covered chunks show what is done
    _assert_subsampled(levels)

    # an interrupted run: regions on level 0 and in the done record, but their chunks not built
    crashed = range(first, first + grid.cols * 3)
    _paint(levels[0], grid, crashed, rng)
    done = np.zeros(len(grid), bool)
    done[: crashed.stop] = True
    resumed = LabelPyramid(levels, grid, done)
    resumed.catch_up()
    resumed.flush()
    _assert_subsampled(levels)
    resumed.update(_paint(levels[0], grid, range(crashed.stop, len(grid)), rng))
    _assert_subsampled(levels)


def test_a_cancelled_and_resumed_run_leaves_a_consistent_pyramid(tmp_path) -> None:
    import torch

    from xt_engine import CancelToken, Progress, create_model, run_inference
    from xt_engine.store.result_store import LABELS_PATH

    image = np.random.default_rng(3).integers(0, 255, (1040, 600, 3), dtype=np.uint8)
    torch.manual_seed(4)  # weights that give classes 1 and 2 on this noise (seed 0: all 0)
    model = create_model("test_convnext_none").eval()
    out, cancel = tmp_path / "run.zarr", CancelToken()
    for event in run_inference(image, model, output=out, batch_size=4, cancel=cancel):
        if isinstance(event, Progress) and event.done >= 60:
            cancel.cancel()
    root = zarr.open_group(str(out), mode="r")
    levels = [root[f"{LABELS_PATH}/{k}"] for k in range(root.attrs["xt"]["label_levels"])]
    assert len(levels) == 3 and all(a.chunks == (64, 64) for a in levels)
    assert root.attrs["xt"]["complete"] is False
    assert len(np.unique(levels[0][:])) > 1 and levels[2][:].any()
    _assert_subsampled(levels)
    list(run_inference(image, model, output=out, batch_size=4, resume=True))
    whole = tmp_path / "whole.zarr"
    list(run_inference(image, model, output=whole, batch_size=4))
    reference = zarr.open_group(str(whole), mode="r")
    for k, level in enumerate(levels):
        np.testing.assert_array_equal(level[:], reference[f"{LABELS_PATH}/{k}"][:])
    _assert_subsampled(levels)


def test_resume_of_a_damaged_store_names_the_fix(tmp_path) -> None:
    import shutil

    from xt_engine import CancelToken, InputError, Progress, create_model, run_inference

    image = np.random.default_rng(5).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    model = create_model("test_convnext_none").eval()
    out, cancel = tmp_path / "run.zarr", CancelToken()
    for event in run_inference(image, model, output=out, batch_size=4, cancel=cancel):
        if isinstance(event, Progress):
            cancel.cancel()
    shutil.rmtree(out / "xt_done")  # the record of finished regions lost
    with pytest.raises(InputError, match="is damaged.*write a new --out"):
        list(run_inference(image, model, output=out, batch_size=4, resume=True))
