"""Never destroy what the tool did not create for this run (xt_engine.store.safety)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from xt_engine import CancelToken, InputError, RegionDone, create_model, run_inference
from xt_engine.cli import main
from xt_engine.store.safety import StoreLock


@pytest.fixture
def model():
    return create_model("test_convnext_none").eval()


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (100, 130, 3), dtype=np.uint8)


def _interrupted(image, model, out: Path) -> None:
    cancel = CancelToken()
    for event in run_inference(image, model, output=out, batch_size=1, cancel=cancel):
        if isinstance(event, RegionDone):
            cancel.cancel()
    assert zarr.open_group(str(out), mode="r").attrs["xt"]["complete"] is False


def test_the_input_itself_is_refused_whatever_the_flags(model, tmp_path: Path) -> None:
    source = tmp_path / "image.zarr"
    zarr.create_array(store=str(source), data=np.full((70, 70, 3), 7, np.uint8))
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(InputError, match="destroy the input"):
            list(run_inference(str(source), model, output=source, **flags))
    inside = tmp_path / "project"
    inside.mkdir()
    tif = inside / "scene.tif"
    tifffile.imwrite(tif, np.zeros((70, 70, 3), np.uint8))
    with pytest.raises(InputError, match="destroy the input"):
        list(run_inference(str(tif), model, output=inside, overwrite=True))
    assert (zarr.open_array(str(source), mode="r")[:] == 7).all() and tif.is_file()


def test_a_folder_that_is_not_a_result_store_is_refused(model, image, tmp_path: Path) -> None:
    group = tmp_path / "project"
    zarr.create_group(store=str(group)).create_array("data", data=np.arange(5))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("keep me")
    for out in (group, notes):
        for flags in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(InputError, match="not a napari-xt result store"):
                list(run_inference(image, model, output=out, **flags))
    assert list(zarr.open_group(str(group), mode="r")["data"][:]) == [0, 1, 2, 3, 4]
    assert (notes / "a.txt").read_text() == "keep me"


def test_existing_results_need_resume_or_overwrite(model, image, tmp_path: Path) -> None:
    out = tmp_path / "run.zarr"
    list(run_inference(image, model, output=out))
    with pytest.raises(InputError, match="complete result.*--overwrite"):
        list(run_inference(image, model, output=out))
    list(run_inference(image, model, output=out, overwrite=True))  # replaced
    assert zarr.open_group(str(out), mode="r").attrs["xt"]["complete"] is True
    partial = tmp_path / "partial.zarr"
    _interrupted(image, model, partial)
    with pytest.raises(InputError, match="interrupted run.*--resume.*--overwrite"):
        list(run_inference(image, model, output=partial))
    list(run_inference(image, model, output=partial, resume=True))
    assert zarr.open_group(str(partial), mode="r").attrs["xt"]["complete"] is True


def test_a_store_being_written_is_refused(model, image, tmp_path: Path) -> None:
    out = tmp_path / "busy.zarr"
    _interrupted(image, model, out)
    lock = StoreLock(out)  # another run holds it
    try:
        with pytest.raises(InputError, match="another xt run is writing"):
            list(run_inference(image, model, output=out, resume=True))
    finally:
        lock.release()
    list(run_inference(image, model, output=out, resume=True))  # free again: resumes


def test_resume_refuses_a_changed_input(model, image, tmp_path: Path) -> None:
    out = tmp_path / "run.zarr"
    _interrupted(image, model, out)
    changed = image.copy()
    changed[0, 0] += 1
    with pytest.raises(InputError, match="input_fingerprint differs"):
        list(run_inference(changed, model, output=out, resume=True))


def test_the_cli_answers_with_one_line_and_exit_2(image, tmp_path: Path, capsys) -> None:
    tif = tmp_path / "scene.tif"
    tifffile.imwrite(tif, image)
    out = tmp_path / "out.zarr"
    args = [
        "infer",
        str(tif),
        "--model",
        "test_convnext_none",
        "--out",
        str(out),
        "--allow-untrained",
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert main([*args, "--overwrite"]) == 0


def test_a_full_disk_ends_with_one_line_and_a_resumable_store(
    model, image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from xt_engine.store.result_store import OutputStore

    real = OutputStore.write_batch
    calls = {"n": 0}

    def write_until_full(self, items):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self, items)

    out = tmp_path / "full.zarr"
    monkeypatch.setattr(OutputStore, "write_batch", write_until_full)
    with pytest.raises(InputError, match="no space left.*--resume"):
        list(run_inference(image, model, output=out, batch_size=1))
    monkeypatch.setattr(OutputStore, "write_batch", real)
    xt = zarr.open_group(str(out), mode="r").attrs["xt"]
    assert xt["complete"] is False
    list(run_inference(image, model, output=out, batch_size=1, resume=True))
    whole = tmp_path / "whole.zarr"
    list(run_inference(image, model, output=whole))
    label = "labels/segmentation/0"
    resumed = zarr.open_group(str(out), mode="r")[label][:]
    np.testing.assert_array_equal(resumed, zarr.open_group(str(whole), mode="r")[label][:])


def test_the_token_cache_lives_in_the_store_and_is_checked_for_space(
    image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil as shutil_module

    import xt_engine.runtime.passes as passes

    model = create_model("test_convnext_txl_bidir").eval()
    seen: list[str] = []
    real = passes.tempfile.TemporaryDirectory

    def spy(*args, **kwargs):
        seen.append(str(kwargs.get("dir")))
        return real(*args, **kwargs)

    monkeypatch.setattr(passes.tempfile, "TemporaryDirectory", spy)
    out = tmp_path / "run.zarr"
    list(run_inference(image, model, output=out))
    assert seen == [str(out)] and not list(out.glob("xt-token-cache-*"))  # removed after
    stale = out / "xt-token-cache-killed"
    stale.mkdir()  # what a kill -9 leaves: the next run on the store removes it
    root = zarr.open_group(str(out), mode="r+")
    root.attrs["xt"] = dict(root.attrs["xt"]) | {"complete": False}
    list(run_inference(image, model, output=out, resume=True))
    assert not stale.exists()
    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(passes.shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(InputError, match="token cache needs .* --cache-dir"):
        list(run_inference(image, model, output=tmp_path / "b.zarr"))
