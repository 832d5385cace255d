"""The labels writer follows the never-destroy rule (issue 17): it replaced whatever lay at the
path it was given (``zarr.open_group(mode="w")`` deletes the folder); now only an empty folder
or a labels image it wrote itself may be written over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_xt._writer import write_labels
from xt_engine.errors import InputError

LABELS = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48) % 4


def test_a_folder_of_the_user_is_refused_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "notes.zarr"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    with pytest.raises(InputError, match="was not written by napari-xt's labels writer"):
        write_labels(str(folder), LABELS, {})
    assert (folder / "thesis.txt").read_text() == "years of work"


def test_a_file_and_a_foreign_zarr_store_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "file.zarr"
    file.write_text("not a folder")
    with pytest.raises(InputError, match="save the labels under a new .zarr name"):
        write_labels(str(file), LABELS, {})
    assert file.read_text() == "not a folder"
    store = tmp_path / "other.zarr"
    zarr.create_array(str(store), data=np.ones((8, 8), np.uint8), zarr_format=3)
    with pytest.raises(InputError):
        write_labels(str(store), LABELS, {})
    assert zarr.open_array(str(store), mode="r")[:].sum() == 64


def test_a_result_store_of_a_run_is_refused(tmp_path: Path) -> None:
    from xt_engine import create_model, run_inference

    store = tmp_path / "run.zarr"
    image = np.zeros((64, 64, 3), np.uint8)
    for _ in run_inference(image, create_model("test_convnext_none").eval(), output=store):
        pass
    with pytest.raises(InputError):
        write_labels(str(store), LABELS, {})
    assert zarr.open_group(str(store), mode="r").attrs["xt"]["complete"] is True


def test_new_empty_and_its_own_targets_are_written(tmp_path: Path) -> None:
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    for target in (tmp_path / "new.zarr", empty):
        assert write_labels(str(target), LABELS, {"name": "seg"}) == [str(target)]
        np.testing.assert_array_equal(zarr.open_group(str(target), mode="r")["0"][:], LABELS)
    write_labels(str(empty), LABELS[::-1].copy(), {})  # saving again over its own labels
    np.testing.assert_array_equal(zarr.open_group(str(empty), mode="r")["0"][:], LABELS[::-1])
    models = pytest.importorskip("ome_zarr_models.v05.image_label", reason="the dev extra")
    models.ImageLabel.from_zarr(zarr.open_group(str(empty), mode="r"))  # valid NGFF 0.5
