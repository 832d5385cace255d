"""The result store is valid NGFF 0.5 and opens in other OME-Zarr readers (issue 17).

ome-zarr-models (the NGFF 0.5 metadata models) validates each OME-Zarr group of the store and
ome-zarr-py reads its label pyramid; both are test-only dependencies (the ``dev`` extra).
napari-ome-zarr's reader is tested in tests/napari_xt/test_third_party_readers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from xt_engine import create_model, run_inference
from xt_engine.store.result_store import LABELS_PATH

ome_zarr_models = pytest.importorskip("ome_zarr_models", reason="test-only: the dev extra")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished segmentation store with an attention image and class probabilities."""
    image = np.random.default_rng(2).integers(0, 255, (300, 600, 3), dtype=np.uint8)
    model = create_model("test_convnext_none").eval()
    out = tmp_path_factory.mktemp("ngff") / "result.zarr"
    for _ in run_inference(
        image, model, output=out, batch_size=4, attention=True, probabilities=True
    ):
        pass
    return out


def test_each_ome_group_validates_as_ngff_0_5(store: Path) -> None:
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel
    from ome_zarr_models.v05.labels import Labels

    root = zarr.open_group(str(store), mode="r")
    labels = Labels.from_zarr(root["labels"])
    assert labels.attributes.ome.labels == ["segmentation"]
    label = ImageLabel.from_zarr(root[LABELS_PATH])
    assert [d.path for d in label.attributes.ome.multiscales[0].datasets] == ["0", "1"]
    assert [p.label_value for p in label.attributes.ome.image_label.properties or []] == [0, 1, 2]
    Image.from_zarr(root["attention"])
    Image.from_zarr(root["probabilities"])
    # the guessing entry point finds the same types
    assert type(ome_zarr_models.open_ome_zarr(root["labels"])).__name__ == "Labels"
    assert type(ome_zarr_models.open_ome_zarr(root[LABELS_PATH])).__name__ == "ImageLabel"


def test_the_root_is_a_plain_group_and_labels_sit_on_the_labels_group(store: Path) -> None:
    """NGFF 0.5: ``ome.labels`` belongs to the ``labels`` group; the root holds no image (the
    source is not copied), so its ``ome`` is the version alone."""
    root_meta = json.loads((store / "zarr.json").read_text())["attributes"]
    assert root_meta["ome"] == {"version": "0.5"}
    labels_meta = json.loads((store / "labels" / "zarr.json").read_text())["attributes"]
    assert labels_meta["ome"] == {"version": "0.5", "labels": ["segmentation"]}
    label_ome = json.loads((store / LABELS_PATH / "zarr.json").read_text())["attributes"]["ome"]
    assert "version" not in label_ome["image-label"]  # 0.5: the version is the ome key's alone


def test_ome_zarr_py_reads_the_label_pyramid(store: Path) -> None:
    parse_url = pytest.importorskip("ome_zarr.io", reason="test-only: the dev extra").parse_url
    from ome_zarr.reader import Label, Labels, Reader

    root = zarr.open_group(str(store), mode="r")
    nodes = list(Reader(parse_url(str(store / "labels")))())
    assert any(isinstance(s, Labels) for s in nodes[0].specs)
    [label] = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert [tuple(d.shape) for d in label.data] == [(300, 600), (150, 300)]
    np.testing.assert_array_equal(np.asarray(label.data[0]), root[f"{LABELS_PATH}/0"][:])
    [image] = list(Reader(parse_url(str(store / "probabilities")))())
    assert tuple(image.data[0].shape) == (3, 300, 600)
