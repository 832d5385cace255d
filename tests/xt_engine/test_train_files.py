"""``xt train``'s files follow the never-destroy rule and are written as a pair (issue 17): an
existing --out needs --resume or --overwrite, --resume without its train state is refused
instead of overwriting the trained checkpoint, and a checkpoint beside a train state of another
save (a kill between the two renames, or files mixed by hand) is completed or refused by the
SHA-256 the state records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from xt_engine import CheckpointError, InputError, load_checkpoint
from xt_engine.cli import main
from xt_engine.train.state import STATE_SUFFIX, sha256_file

CONFIG = {
    "tiling": {"region_size": 64},
    "region_encoder": {"name": "test_convnext", "in_chans": 1},
    "context_encoder": {"kind": "transformer_xl", "dim": 32, "depth": 1, "chunk_regions": 2},
    "head": {"task": "segmentation", "num_classes": 3},
    "train": {"crop_size": 64, "batch_size": 1, "max_steps": 2, "val_every": 2, "val_crops": 1},
}


def write_data(folder: Path, mask_max: int = 2) -> list[str]:
    """A 96 x 128 image and mask (labels 0 .. mask_max) and a config; the ``xt train`` args
    without --out."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    tifffile.imwrite(folder / "images" / "a.tif", rng.integers(0, 255, (96, 128), np.uint8))
    mask = rng.integers(0, mask_max + 1, (96, 128)).astype(np.uint8)
    tifffile.imwrite(folder / "masks" / "a.tif", mask)
    config = folder / "cfg.json"
    config.write_text(json.dumps(CONFIG))
    images, masks = str(folder / "images"), str(folder / "masks")
    return ["train", "--images", images, "--masks", masks, "--config", str(config)]


def _debug(args: list[str]) -> list[str]:
    return ["--debug", *args]  # the error itself, not the printed line


def test_an_existing_out_needs_resume_or_overwrite(tmp_path: Path) -> None:
    args = write_data(tmp_path)
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"someone's weights")
    with pytest.raises(InputError, match="already exists.*--resume.*--overwrite"):
        main(_debug([*args, "--out", str(out)]))
    assert out.read_bytes() == b"someone's weights"
    with pytest.raises(CheckpointError, match="no train state .* would overwrite the trained"):
        main(_debug([*args, "--out", str(out), "--resume"]))
    assert out.read_bytes() == b"someone's weights"
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    with pytest.raises(InputError, match="is not a checkpoint file"):
        main(_debug([*args, "--out", str(folder), "--overwrite"]))
    assert main([*args, "--out", str(out), "--overwrite"]) == 0
    assert load_checkpoint(out).config.head.num_classes == 3


def test_the_pair_records_the_checkpoint_hash_and_resume_checks_it(tmp_path: Path) -> None:
    args = [*write_data(tmp_path), "--out", str(tmp_path / "m.safetensors")]
    out = tmp_path / "m.safetensors"
    state = tmp_path / ("m.safetensors" + STATE_SUFFIX)
    assert main(args) == 0
    saved = torch.load(state, weights_only=True)
    assert saved["checkpoint_sha256"] == sha256_file(out) and saved["step"] == 2
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.pending"))
    old_state = state.read_bytes()
    assert main([*args, "--resume", "--max-steps", "4"]) == 0  # a new pair at step 4
    new_state = state.read_bytes()

    state.write_bytes(old_state)  # a torn pair: step 4's weights beside step 2's state
    with pytest.raises(CheckpointError, match="belongs to another checkpoint .*SHA-256"):
        main(_debug([*args, "--resume", "--max-steps", "6"]))

    # a kill between the two renames: the new state still in its .partial file -> completed
    (tmp_path / (state.name + ".partial")).write_bytes(new_state)
    assert main([*args, "--resume", "--max-steps", "6"]) == 0
    assert torch.load(state, weights_only=True)["step"] == 6


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not a torch file", "cannot be read"),
        ("pickle", "cannot be read"),  # weights_only refuses any object it does not know
        ({"step": 2}, "lacks optimizer, schedule, rng, torch_rng"),
    ],
)
def test_a_bad_train_state_is_one_error(tmp_path: Path, content: object, needle: str) -> None:
    args = [*write_data(tmp_path), "--out", str(tmp_path / "m.safetensors")]
    assert main(args) == 0
    state = tmp_path / ("m.safetensors" + STATE_SUFFIX)
    if isinstance(content, bytes):
        state.write_bytes(content)
    elif content == "pickle":
        torch.save({"step": shutil.rmtree}, state)
    else:
        torch.save(content, state)
    with pytest.raises(CheckpointError, match=needle):
        main(_debug([*args, "--resume", "--max-steps", "4"]))


def test_mask_labels_beyond_the_classes_are_refused(tmp_path: Path) -> None:
    args = [*write_data(tmp_path, mask_max=7), "--out", str(tmp_path / "m.safetensors")]
    with pytest.raises(InputError, match=r"mask a.tif holds label [3-7] but the model has 3"):
        main(_debug(args))
    assert not (tmp_path / "m.safetensors").exists()
