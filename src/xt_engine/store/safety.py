"""Never destroy what this tool did not create for this run.

Before a run writes to ``--out``:

- a path that is the input, lies inside it or contains it is refused, whatever the flags;
- an existing directory that is not a napari-xt result store (a user's folder, a zarr group of
  someone else's) is refused, whatever the flags;
- an existing complete result store is refused unless ``overwrite``; an incomplete one is
  refused with the hint to ``--resume`` it or ``--overwrite`` it;
- a store another process is writing (its lock file is held) is refused.

The lock is an ``flock`` on ``OUT/xt.lock`` held for the whole run: the kernel releases it when
the process ends, however it ends (kill -9 included), so a stale lock never blocks a resume.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from xt_engine.errors import InputError

LOCK_FILE = "xt.lock"


class StoreBusy(InputError):
    """Another process holds the store's lock (``xt batch`` waits and tries again)."""


def read_store_attrs(path: Path) -> dict | None:
    """The ``xt`` attributes of a napari-xt result store at ``path``, or None if it is not one."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    xt = attrs.get("xt")
    if not isinstance(xt, dict) or not str(xt.get("software", "")).startswith("napari-xt"):
        return None
    return xt


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output(path: Path, *, input_path: str | None, overwrite: bool, resume: bool) -> str:
    """What may happen at ``path``: ``"new"`` (nothing there), ``"resume"`` (an interrupted
    store of this tool and ``resume``), ``"replace"`` (a store of this tool and ``overwrite``);
    anything else is an InputError naming the problem and the flag."""
    out = path.resolve()
    if input_path:
        source = Path(input_path).resolve()
        if _related(out, source):
            raise InputError(
                f"--out {path} is, contains or lies inside the input {input_path}; "
                "writing there would destroy the input",
                "choose an output path outside the input image",
            )
    if not path.exists():
        return "new"
    entries = {child.name for child in path.iterdir()} if path.is_dir() else set()
    if not path.is_dir() or (entries - {LOCK_FILE} and read_store_attrs(path) is None):
        raise InputError(
            f"{path} exists and is not a napari-xt result store; refusing to replace it",
            "choose a new --out path (this tool never deletes what it did not write)",
        )
    xt = read_store_attrs(path)
    if xt is None:  # an empty directory (or one only this tool's lock file is in)
        return "new"
    if resume and not xt.get("complete", False):
        return "resume"
    if overwrite:
        return "replace"
    if xt.get("complete", False):
        raise InputError(
            f"{path} already holds a complete result",
            "add --overwrite to replace it, or choose a new --out",
        )
    raise InputError(
        f"{path} holds an interrupted run",
        "add --resume to continue it, or --overwrite to start again",
    )


class StoreLock:
    """An exclusive, non-blocking ``flock`` on ``OUT/xt.lock`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        self.file = path / LOCK_FILE
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(
                f"cannot write to {path} ({err.strerror or type(err).__name__})",
                "choose a writable output path",
            ) from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(self._fd)
            self._fd = None
            raise StoreBusy(
                f"another xt run is writing to {path}",
                "wait for it to finish, or choose another --out",
            ) from err

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # pragma: no cover - the run releases it explicitly
        self.release()


def clear_store(path: Path) -> None:
    """Remove a napari-xt result store's contents (``--overwrite``), keeping its lock file."""
    if read_store_attrs(path) is None:  # checked again right before deleting anything
        raise InputError(f"{path} is not a napari-xt result store", "choose a new --out")
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
