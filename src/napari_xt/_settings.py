"""Where the widget writes its result stores, and the few choices it remembers (no Qt, no napari).

Each run writes a new store ``run-YYYYmmdd-HHMMSS.zarr`` (``-2``, ``-3``, ... when that name is
taken) into the output folder; nothing is ever deleted by the widget. The output folder of an
image that came from a file is ``<image stem>-xt/`` beside that file unless the user picked
another folder for it; for an image without a file (sample data, arrays from a script) it is
the folder the user last picked for such images, by default ``~/napari-xt``.

The remembered folders live in ``widget.json`` in the user's config folder (``napari-xt`` under
``$XDG_CONFIG_HOME`` / ``~/.config``, ``~/Library/Application Support`` or ``%APPDATA%``), or in
``$NAPARI_XT_CONFIG_DIR`` when that is set; napari's own settings are not touched.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

CONFIG_ENV = "NAPARI_XT_CONFIG_DIR"
SETTINGS_FILE = "widget.json"
DEFAULT_FOLDER = Path("~") / "napari-xt"
REMEMBERED_IMAGES = 100  # per-image folders kept (the most recent ones)
_DOUBLE_SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.zarr", ".ome.btf")


def config_dir() -> Path:
    """The folder holding ``widget.json`` (not created here)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "napari-xt"


def load_settings() -> dict[str, Any]:
    """The remembered settings; empty when there are none or the file is unreadable."""
    try:
        data = json.loads((config_dir() / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_settings(settings: dict[str, Any]) -> None:
    """Write the settings (atomically); a config folder that cannot be written is ignored."""
    folder = config_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (SETTINGS_FILE + ".partial")
        tmp.write_text(json.dumps(settings, indent=2))
        os.replace(tmp, folder / SETTINGS_FILE)
    except OSError:
        pass


def beside_image(image_path: str | os.PathLike[str]) -> Path:
    """``<image stem>-xt`` next to an image file (or OME-Zarr folder)."""
    path = Path(image_path).expanduser().resolve()
    name = path.name.rstrip("/")
    for suffix in _DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = Path(name).stem or name
    return path.parent / f"{name}-xt"


def output_folder(image_path: str | None, settings: dict[str, Any] | None = None) -> Path:
    """The output folder for an image: the one remembered for it, else beside the image file;
    for an image without a file, the last folder picked for such images."""
    settings = load_settings() if settings is None else settings
    if image_path:
        key = str(Path(image_path).expanduser().resolve())
        remembered = settings.get("image_folders", {}).get(key)
        return Path(remembered) if remembered else beside_image(image_path)
    return Path(settings.get("output_folder") or DEFAULT_FOLDER).expanduser()


def remember_output_folder(folder: str | os.PathLike[str], image_path: str | None) -> None:
    """Remember ``folder`` for this image (or for images without a file)."""
    settings = load_settings()
    folder = str(Path(folder).expanduser())
    if image_path:
        key = str(Path(image_path).expanduser().resolve())
        images = dict(settings.get("image_folders", {}))
        images.pop(key, None)
        if Path(folder).resolve() != beside_image(image_path):
            images[key] = folder  # (re-)inserted last: the most recent
        settings["image_folders"] = dict(list(images.items())[-REMEMBERED_IMAGES:])
    else:
        settings["output_folder"] = folder
    save_settings(settings)


def new_store_path(folder: str | os.PathLike[str], now: float | None = None) -> Path:
    """A store path in ``folder`` that does not exist yet: ``run-YYYYmmdd-HHMMSS.zarr``, or
    with ``-2``, ``-3``, ... appended when a run of the same second is there."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = Path(folder).expanduser()
    candidate, n = base / f"run-{stamp}.zarr", 1
    while candidate.exists():
        n += 1
        candidate = base / f"run-{stamp}-{n}.zarr"
    return candidate
