"""Whole chunk files (the result store's fast path) read and write exactly what zarr does."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from xt_engine.io import open_image
from xt_engine.models import model_config
from xt_engine.store.chunk_files import ChunkFiles
from xt_engine.store.result_store import OutputStore
from xt_engine.tiling import RegionGrid


def _array(tmp_path, name: str = "a", **kw: object) -> zarr.Array:
    options = {"shape": (300, 500), "chunks": (128, 128), "dtype": "uint8", "fill_value": 0}
    return zarr.create_array(str(tmp_path / name), **(options | kw))


def test_written_chunks_read_back_through_zarr(tmp_path) -> None:
    array = _array(tmp_path)
    files = ChunkFiles.of(array)
    assert files is not None
    rng = np.random.default_rng(0)
    inner = rng.integers(1, 9, (128, 128), dtype=np.uint8)
    edge = rng.integers(1, 9, (300 - 256, 500 - 384), dtype=np.uint8)  # the corner chunk's part
    files.write((0, 1), inner)
    files.write((2, 3), edge)
    expected = np.zeros((300, 500), np.uint8)
    expected[0:128, 128:256] = inner
    expected[256:, 384:] = edge
    np.testing.assert_array_equal(array[:], expected)
    np.testing.assert_array_equal(files.read((0, 1)), inner)
    np.testing.assert_array_equal(files.read((2, 3))[: edge.shape[0], : edge.shape[1]], edge)
    assert not files.read((1, 1)).any()  # never written: the fill value
    # zarr's own writes read back the same way
    array[128:256, 0:128] = 7
    np.testing.assert_array_equal(files.read((1, 0)), np.full((128, 128), 7, np.uint8))


def test_a_chunk_of_fill_values_is_removed_not_written(tmp_path) -> None:
    array = _array(tmp_path)
    files = ChunkFiles.of(array)
    files.write((1, 1), np.ones((128, 128), np.uint8))
    assert files.path((1, 1)).exists()
    files.write((1, 1), np.zeros((128, 128), np.uint8))
    assert not files.path((1, 1)).exists()
    assert not array[:].any()
    assert not list(files.root.rglob("*.partial"))


@pytest.mark.parametrize(
    "layout",
    [
        {"compressors": None},  # no zstd
        {"dtype": "float16"},  # more than one byte per value
        {"chunks": (100, 100), "shards": (200, 200)},
    ],
)
def test_other_layouts_are_left_to_zarr(tmp_path, layout) -> None:
    assert ChunkFiles.of(_array(tmp_path, **layout)) is None
    memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(10,), dtype="uint8")
    assert ChunkFiles.of(memory) is None


@pytest.mark.parametrize("roi", [None, (40, 24, 600, 700)])  # on and off the chunk grid
def test_store_fast_path_equals_zarr_slicing(tmp_path, roi) -> None:
    """Every level and the done record are identical with and without the chunk files."""
    config = model_config("test_convnext_none")
    source = open_image(np.zeros((700, 900), np.uint8))
    grid = RegionGrid.for_image((700, 900), 64, roi, 0)
    rng = np.random.default_rng(1)
    stores = []
    for name in ("fast", "zarr"):
        store = OutputStore.create(
            tmp_path / f"{name}.zarr", source=source, level=0, grid=grid, config=config
        )
        if name == "zarr":
            store._label_files = store._done_files = None
            store.pyramid._files = [None] * len(store.pyramid._files)
        else:
            assert store._label_files is not None and store._done_files is not None
        stores.append(store)
    regions = list(grid)[: len(grid) - 3]  # the last three stay undone
    for start in range(0, len(regions), 5):
        batch = regions[start : start + 5]
        labels = [rng.integers(0, 3, (r.height, r.width), np.uint8) for r in batch]
        for store in stores:
            store.write_batch(
                [(r, lab, None, None, None) for r, lab in zip(batch, labels, strict=True)]
            )
    fast, reference = stores
    assert len(fast.labels) == len(reference.labels) >= 2
    for k, (a, b) in enumerate(zip(fast.labels, reference.labels, strict=True)):
        np.testing.assert_array_equal(a[:], b[:], err_msg=f"level {k}")
    assert fast.labels[0][:].any()
    np.testing.assert_array_equal(fast.done[:], reference.done[:])
    assert fast.done_regions() == {r.index for r in regions}


def test_the_zarr_release_is_one_the_chunk_files_were_checked_against() -> None:
    """ChunkFiles reads zarr.core metadata classes (not public API): a zarr outside the pinned
    range must fail here first, not silently write wrong chunks."""
    from packaging.version import Version

    from xt_engine.store import chunk_files

    assert Version("3.0") <= Version(zarr.__version__) < Version("3.2"), zarr.__version__
    assert chunk_files.RegularChunkGrid.__module__.startswith("zarr.core")
    assert chunk_files.DefaultChunkKeyEncoding.__module__.startswith("zarr.core")
