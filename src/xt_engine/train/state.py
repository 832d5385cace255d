"""A training run's files: the checkpoint ``OUT`` and its train state ``OUT.trainstate.pt``.

Never destroy: an existing ``OUT`` is refused unless the run ``resume``\\ s it (its train state
beside it) or ``overwrite``\\ s it; ``resume`` without the train state is refused (training
from scratch would overwrite the trained checkpoint). A directory at ``OUT`` is always refused.

The pair is written as one: the checkpoint to ``OUT.pending``, the state (recording the
checkpoint's SHA-256) to ``OUT.trainstate.pt.partial``, both synced, then renamed in that
order. A kill between the two renames leaves the new checkpoint beside the old state: a resume
finds the new state in its ``.partial`` file (its hash matches) and completes the rename; any
other mismatch is refused, naming both hashes. States written before the hash was recorded
resume unchecked. A train state that cannot be read, lacks a field or does not fit the
optimizer is a :class:`CheckpointError` (one line, exit 2).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from xt_engine.errors import CheckpointError, InputError

STATE_SUFFIX = ".trainstate.pt"
STATE_FIELDS = ("optimizer", "schedule", "step", "rng", "torch_rng")
_FIX = "resume from a checkpoint and train state written together, or pass --overwrite"


def state_path(out: Path) -> Path:
    return out.with_name(out.name + STATE_SUFFIX)


def check_train_output(out: Path, *, resume: bool, overwrite: bool) -> str:
    """What a run may do at ``out``: ``"new"``, ``"resume"`` or ``"replace"``; anything that
    would destroy a checkpoint not asked for is an error naming the flag."""
    state = state_path(out)
    if out.exists() or out.is_symlink():
        if not out.is_file():
            raise InputError(
                f"--out {out} exists and is not a checkpoint file",
                "choose a new --out path (.safetensors)",
            )
        if resume and state.exists():
            return "resume"
        if overwrite:
            return "replace"
        if resume:
            raise CheckpointError(
                f"--resume: {out} has no train state {state.name} beside it; training from "
                "scratch would overwrite the trained checkpoint",
                "pass the --out of the run to continue, --overwrite to train it from scratch, "
                "or a new --out",
            )
        raise InputError(
            f"--out {out} already exists",
            "add --resume to continue its training, --overwrite to replace it, or choose a new "
            "--out",
        )
    if resume and state.exists() and not overwrite:
        raise CheckpointError(
            f"--resume: train state {state.name} has no checkpoint {out.name} beside it", _FIX
        )
    return "new"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def save_pair(write_checkpoint: Any, out: Path, state: dict[str, Any]) -> None:
    """``write_checkpoint(path)`` writes the checkpoint; then the pair is renamed into place
    as the module docstring says."""
    pending = out.with_name(out.name + ".pending")
    write_checkpoint(pending)
    _sync(pending)
    path = state_path(out)
    tmp = path.with_name(path.name + ".partial")
    torch.save({**state, "checkpoint_sha256": sha256_file(pending)}, tmp)
    _sync(tmp)
    os.replace(pending, out)
    os.replace(tmp, path)


def _read_state(path: Path, device: torch.device) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        why = " ".join(str(err).split())[:80]
        raise CheckpointError(
            f"train state {path} cannot be read ({type(err).__name__}: {why})", _FIX
        ) from err
    missing = [k for k in STATE_FIELDS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise CheckpointError(f"train state {path} lacks {', '.join(missing)}", _FIX)
    step = saved["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"train state {path} has step {step!r:.40}", _FIX)
    if not isinstance(saved["rng"], dict) or not isinstance(saved["torch_rng"], torch.Tensor):
        raise CheckpointError(f"train state {path} has no random generator states", _FIX)
    return dict(saved)


def load_state(out: Path, device: torch.device) -> dict[str, Any]:
    """The train state of checkpoint ``out``, checked against its SHA-256 (see the module
    docstring; an interrupted save's rename is completed here)."""
    path = state_path(out)
    digest = sha256_file(out)
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        try:
            newer = _read_state(partial, device).get("checkpoint_sha256")
        except CheckpointError:
            newer = None  # a save killed while writing the state: the old pair stands
        if newer == digest:
            try:
                os.replace(partial, path)
            except FileNotFoundError:  # another rank completed it
                pass
    saved = _read_state(path, device)
    recorded = saved.get("checkpoint_sha256")
    if recorded is not None and recorded != digest:
        raise CheckpointError(
            f"train state {path.name} belongs to another checkpoint than {out.name} "
            f"(SHA-256 {str(recorded)[:12]}... recorded, {digest[:12]}... found): "
            "the two were not written together",
            _FIX,
        )
    return saved
