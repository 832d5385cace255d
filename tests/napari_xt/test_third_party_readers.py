"""A result store opens in napari-ome-zarr's reader (test-only dependency, called directly:
no viewer), and this plugin's reader still opens a store of the layout before NGFF 0.5 was
followed (``ome.labels`` on the root group instead of the ``labels`` group)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from xt_engine import create_model, run_inference
from xt_engine.store.result_store import LABELS_PATH


def _store(path: Path) -> Path:
    image = np.random.default_rng(3).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    for _ in run_inference(image, create_model("test_convnext_none").eval(), output=path):
        pass
    return path


def test_napari_ome_zarr_opens_the_labels_group(tmp_path: Path) -> None:
    reader = pytest.importorskip("napari_ome_zarr._reader", reason="test-only: the dev extra")
    store = _store(tmp_path / "run.zarr")
    expected = zarr.open_group(str(store), mode="r")[f"{LABELS_PATH}/0"][:]
    for path in (store / "labels", store / LABELS_PATH):
        function = reader.napari_get_reader(str(path))
        assert function is not None
        layers = function(str(path))
        kinds = [layer[2] for layer in layers]
        assert kinds == ["labels"], (path, kinds)
        data = layers[0][0]
        level0 = data[0] if isinstance(data, list) else data
        np.testing.assert_array_equal(np.asarray(level0), expected)
    assert reader.napari_get_reader(str(store))(str(store)) == []  # the root holds no image


def test_the_plugin_reads_a_store_of_the_old_layout(tmp_path: Path) -> None:
    from napari_xt._reader import read_result_store

    store = _store(tmp_path / "old.zarr")
    for meta_path, ome in (
        (store / "zarr.json", {"version": "0.5", "labels": ["segmentation"]}),
        (store / "labels" / "zarr.json", None),
    ):
        meta = json.loads(meta_path.read_text())
        if ome is None:
            meta.get("attributes", {}).pop("ome", None)
        else:
            meta["attributes"]["ome"] = ome
        meta_path.write_text(json.dumps(meta))
    [(data, kwargs, kind)] = read_result_store(str(store))
    assert kind == "labels"
    level0 = data[0] if isinstance(data, list) else data
    expected = zarr.open_group(str(store), mode="r")[f"{LABELS_PATH}/0"][:]
    np.testing.assert_array_equal(np.asarray(level0[:]), expected)
