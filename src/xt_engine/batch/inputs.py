"""What a batch runs: the images behind ``xt batch INPUT...``, each with its store's name.

An INPUT is

* a folder: searched recursively for what :func:`xt_engine.io.open_image` reads, by suffix
  (``TIFF_SUFFIXES``, ``SLIDE_SUFFIXES``, ``.png/.jpg/.jpeg``), OME-Zarr / zarr folders and
  DICOM WSI folders (each one image, not searched further); the output folder and result
  stores of this tool are left out, and the ``.jpg`` parts beside a Hamamatsu ``.vms``/``.vmu``
  are not images of their own;
* a glob (``slides/**/*.svs``, quoted so that the shell leaves it alone);
* a manifest, ``.csv`` (a header with ``path`` and optional ``roi``, ``level``, ``output``) or
  ``.json`` (a list of such objects, or ``{"images": [...]}``): ``roi`` is ``Y0 X0 Y1 X1`` in
  level-0 pixels (a list in JSON, four numbers split by spaces or commas in CSV); relative
  paths are relative to the manifest;
* an image file or folder itself.

Store names are stable: they depend on the image's own path only, never on the other inputs.
A folder's or glob's image is named by its path below the folder (or the glob's fixed part),
format suffix dropped and ``/`` written ``__`` (``case1/slide.svs`` -> ``case1__slide.zarr``);
an image given by itself by its file name; a manifest's ``output`` wins. Two images with one
name are refused, naming both (the fix: a manifest with ``output`` names).
"""

from __future__ import annotations

import csv
import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xt_engine.errors import InputError
from xt_engine.io import SLIDE_SUFFIXES, TIFF_SUFFIXES, is_dicom_folder
from xt_engine.store.safety import read_store_attrs

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
ZARR_MARKERS = ("zarr.json", ".zattrs", ".zgroup", ".zarray")
MANIFEST_SUFFIXES = (".csv", ".json")
_IMAGE_SUFFIXES = tuple(sorted({*TIFF_SUFFIXES, *SLIDE_SUFFIXES, *PHOTO_SUFFIXES}, key=len))


@dataclass(frozen=True)
class ImageTask:
    """One image of a batch: its path, optional ROI (level-0 pixels ``y0, x0, y1, x1``) and
    level, and the name of its store in the output folder (``NAME.zarr``)."""

    path: str
    name: str
    roi: tuple[int, int, int, int] | None = None
    level: int | None = None


def collect_inputs(inputs: list[str], out_dir: Path | None = None) -> list[ImageTask]:
    """Every image of ``inputs`` (see the module docstring), sorted by store name; an InputError
    for an input that names nothing, a bad manifest row or two images with one store name."""
    tasks: list[ImageTask] = []
    skip = out_dir.resolve() if out_dir is not None else None
    for spec in inputs:
        path = Path(spec)
        if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            tasks += read_manifest(path)
        elif path.is_dir() and not _is_image_folder(path):
            found = sorted(_scan(path, skip))
            if not found:
                raise InputError(f"{spec}: no images in this folder", _FORMATS_FIX)
            tasks += [ImageTask(str(p), _name(p.relative_to(path))) for p in found]
        elif path.exists():
            tasks.append(ImageTask(str(path), _name(Path(path.name))))
        elif glob.has_magic(spec):
            tasks += _glob(spec, skip)
        else:
            raise InputError(f"{spec} does not exist", "pass folders, globs, images or manifests")
    return _checked(tasks)


_FORMATS_FIX = (
    "put TIFF/OME-TIFF/SVS/NDPI, OpenSlide slides, DICOM WSI folders, OME-Zarr, PNG or JPEG "
    "images there, or pass a glob or a manifest"
)


def _glob(pattern: str, skip: Path | None) -> list[ImageTask]:
    parts = Path(pattern).parts
    fixed = Path(*[p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]])
    found = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if _outside(path, skip) and (_is_image_file(path) or _is_image_folder(path)):
            found.append(ImageTask(str(path), _name(path.relative_to(fixed))))
    if not found:
        raise InputError(f"{pattern}: the glob matches no images", _FORMATS_FIX)
    return found


def _scan(folder: Path, skip: Path | None) -> list[Path]:
    """The images below ``folder``, recursively (image folders are not entered)."""
    found: list[Path] = []
    entries = sorted(folder.iterdir())
    vms = any(e.suffix.lower() in (".vms", ".vmu") for e in entries)
    for entry in entries:
        if not _outside(entry, skip) or entry.name.startswith("."):
            continue
        if entry.is_dir():
            if read_store_attrs(entry) is not None:  # an earlier run's result, not an image
                continue
            found += [entry] if _is_image_folder(entry) else _scan(entry, skip)
        elif _is_image_file(entry) and not (vms and entry.suffix.lower() in (".jpg", ".jpeg")):
            found.append(entry)
    return found


def _outside(path: Path, skip: Path | None) -> bool:
    return skip is None or path.resolve() != skip


def _is_image_file(path: Path) -> bool:
    lower = path.name.lower()
    return path.is_file() and lower.endswith(_IMAGE_SUFFIXES) and not lower.endswith(".dcm")


def _is_image_folder(path: Path) -> bool:
    """An OME-Zarr / zarr store or a DICOM WSI folder."""
    if not path.is_dir():
        return False
    if path.name.lower().endswith(".zarr") or any((path / m).exists() for m in ZARR_MARKERS):
        return True
    return is_dicom_folder(path)


def _name(relative: Path) -> str:
    """``case1/slide.ome.tif`` -> ``case1__slide``."""
    stem = relative.name
    for suffix in sorted((*_IMAGE_SUFFIXES, ".ome.zarr", ".zarr"), key=len, reverse=True):
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    return "__".join([*relative.parent.parts, stem])


def read_manifest(path: Path) -> list[ImageTask]:
    """The rows of a CSV / JSON manifest (see the module docstring)."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            rows = data.get("images") if isinstance(data, dict) else data
        else:
            rows = list(csv.DictReader(text.splitlines()))
    except (OSError, ValueError, csv.Error) as err:
        raise InputError(f"cannot read the manifest {path}: {err}", _MANIFEST_FIX) from err
    if not isinstance(rows, list) or not rows:
        raise InputError(f"the manifest {path} lists no images", _MANIFEST_FIX)
    return [_manifest_row(path, number, row) for number, row in enumerate(rows, 1)]


_MANIFEST_FIX = (
    "a CSV with a header 'path,roi,level,output' (only path required) or a JSON list of "
    '{"path": ..., "roi": [y0, x0, y1, x1], "level": N, "output": NAME}'
)


def _manifest_row(manifest: Path, number: int, row: Any) -> ImageTask:
    where = f"{manifest.name} row {number}"
    if not isinstance(row, dict) or not row.get("path"):
        raise InputError(f"{where} has no path", _MANIFEST_FIX)
    image = Path(str(row["path"]).strip())
    image = image if image.is_absolute() else manifest.parent / image
    roi = row.get("roi")
    if roi not in (None, ""):
        values = re.split(r"[\s,;]+", roi.strip()) if isinstance(roi, str) else roi
        try:
            box = tuple(int(v) for v in values)
        except (TypeError, ValueError):
            box = ()
        if len(box) != 4:
            raise InputError(f"{where}: roi {roi!r} is not four integers", "Y0 X0 Y1 X1")
        roi = box
    else:
        roi = None
    level = row.get("level")
    if level not in (None, ""):
        try:
            level = int(level)
        except (TypeError, ValueError):
            raise InputError(f"{where}: level {level!r} is not an integer", _MANIFEST_FIX) from None
    else:
        level = None
    output = str(row.get("output") or "").strip()
    name = output.removesuffix(".zarr") if output else _name(Path(image.name))
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"{where}: output {output!r} is not a plain name", "e.g. case1-roi2")
    return ImageTask(str(image), name, roi, level)  # type: ignore[arg-type]


def _checked(tasks: list[ImageTask]) -> list[ImageTask]:
    by_name: dict[str, ImageTask] = {}
    for task in tasks:
        other = by_name.setdefault(task.name, task)
        if other is not task:
            raise InputError(
                f"{other.path} and {task.path} would both be written to {task.name}.zarr",
                "give them distinct names with a manifest's output column",
            )
    return sorted(by_name.values(), key=lambda t: t.name)


def shard(tasks: list[ImageTask], index: int, count: int) -> list[ImageTask]:
    """Share ``index`` of ``count`` (every ``count``-th image in name order, from ``index``):
    the same share every time for the same inputs, and the shares cover every image once."""
    return tasks[index::count]


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N) with ``0 <= I < N``; an InputError otherwise."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise InputError(f"--shard {text} is not I/N with 0 <= I < N", "e.g. --shard 0/4")
    return int(match[1]), int(match[2])
