"""Training pairs (large image + integer label mask of the same YX size) and crop sampling.

Pairs come from two folders matched by file stem, or from a manifest (JSON list of
``{"image": ..., "mask": ...}`` or a two-column CSV). Images and masks are opened lazily with
:func:`xt_engine.io.open_image`; a crop reads only its box. Rare-class pixel locations are indexed
once per mask on a coarse grid (read in bands), so positive sampling never loads a whole mask.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xt_engine.errors import InputError
from xt_engine.io import ImageSource, open_image
from xt_engine.tasks.base import IGNORE_INDEX
from xt_engine.train.annotations import ANNOTATION_SUFFIXES, annotation_mask

IMAGE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".png", ".zarr")
MASK_SUFFIXES = (*IMAGE_SUFFIXES, *ANNOTATION_SUFFIXES)  # label images or QuPath GeoJSON


@dataclass
class Pair:
    name: str
    image: ImageSource
    mask: ImageSource
    positives: np.ndarray  # (P, 3) level-0 (y, x, class) of sampled rare-class pixels


def _open_any(path: Path) -> ImageSource:
    if path.suffix.lower() == ".png":
        from PIL import Image

        from xt_engine.io import source_from_arrays

        return source_from_arrays(np.asarray(Image.open(path)), name=path.name)
    return open_image(path)


def find_pairs(
    images: Path | None, masks: Path | None, manifest: Path | None
) -> list[tuple[Path, Path]]:
    """(image, mask) paths from two folders matched by stem, or from a manifest file."""
    if manifest is not None:
        rows = _manifest_rows(manifest)
        return [(manifest.parent / a, manifest.parent / b) for a, b in rows]
    if images is None or masks is None:
        raise InputError(
            "no training data given", "pass --images DIR --masks DIR or --manifest FILE"
        )
    for folder in (images, masks):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder", "pass folders of images and masks")

    def stem(p: Path) -> str:
        return p.name.split(".")[0]

    mask_by_stem = {
        stem(p): p for p in masks.iterdir() if p.name.lower().endswith(MASK_SUFFIXES)
    }
    pairs = [
        (p, mask_by_stem[stem(p)])
        for p in sorted(images.iterdir())
        if p.name.lower().endswith(IMAGE_SUFFIXES) and stem(p) in mask_by_stem
    ]
    if not pairs:
        raise InputError(
            f"no image in {images} has a mask with the same name in {masks}",
            "name each mask like its image (e.g. scene1.tif and scene1.tif)",
        )
    return pairs


MANIFEST_FIX = (
    'write a JSON list of {"image": PATH, "mask": PATH} objects or a CSV of image,mask rows '
    "(paths relative to the manifest)"
)


def _manifest_rows(manifest: Path) -> list[tuple[str, str]]:
    """The (image, mask) rows of a JSON or CSV manifest; anything else is one InputError."""
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} does not exist", "check the path")
    try:
        text = manifest.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"manifest {manifest} is not a text file ({err})", MANIFEST_FIX) from err
    rows: list[tuple[str, str]] = []
    if manifest.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise InputError(
                f"manifest {manifest} is not valid JSON ({err})", MANIFEST_FIX
            ) from err
        if not isinstance(data, list):
            raise InputError(f"manifest {manifest} holds no list of pairs", MANIFEST_FIX)
        for i, row in enumerate(data):
            if not isinstance(row, dict) or not all(
                isinstance(row.get(k), str) and row.get(k) for k in ("image", "mask")
            ):
                raise InputError(
                    f"manifest {manifest} entry {i} has no image and mask paths ({row!r:.60})",
                    MANIFEST_FIX,
                )
            rows.append((row["image"], row["mask"]))
    else:
        try:
            records = [r for r in csv.reader(text.splitlines()) if any(v.strip() for v in r)]
        except csv.Error as err:
            raise InputError(f"manifest {manifest} is not valid CSV ({err})", MANIFEST_FIX) from err
        for i, record in enumerate(records):
            if i == 0 and record[:2] == ["image", "mask"]:
                continue  # the header
            if len(record) < 2 or not record[0].strip() or not record[1].strip():
                raise InputError(
                    f"manifest {manifest} row {i + 1} has no image and mask columns "
                    f"({','.join(record)[:60]!r})",
                    MANIFEST_FIX,
                )
            rows.append((record[0].strip(), record[1].strip()))
    if not rows:
        raise InputError(f"manifest {manifest} lists no image and mask pairs", MANIFEST_FIX)
    return rows


def load_pairs(
    paths: list[tuple[Path, Path]],
    num_classes: int,
    seed: int,
    class_names: list[str] | None = None,
    unlabelled: str = "ignore",
) -> list[Pair]:
    """Open the pairs; a mask path ending in ``.geojson`` is a QuPath annotation export,
    rasterised on the fly (:mod:`xt_engine.train.annotations`) with ``class_names`` (default
    ``class_0 ...``) and ``unlabelled`` pixels ignored or background."""
    rng = np.random.default_rng(seed)
    names = class_names or [f"class_{i}" for i in range(num_classes)]
    pairs = []
    for image_path, mask_path in paths:
        image = _open_any(image_path)
        if mask_path.name.lower().endswith(ANNOTATION_SUFFIXES):
            lazy = annotation_mask(mask_path, image.shape_yx(0), names, unlabelled)
            mask = ImageSource([lazy], "yx", name=mask_path.name)
        else:
            mask = _open_any(mask_path)
        if image.shape_yx(0) != mask.shape_yx(0):
            raise InputError(
                f"{image_path.name} is {image.shape_yx(0)} px but its mask is {mask.shape_yx(0)}",
                "give each image a mask of the same height and width",
            )
        if mask.num_channels != 1:
            raise InputError(
                f"mask {mask_path.name} has {mask.num_channels} channels",
                "save masks as single-channel integer images",
            )
        positives = rare_pixels(mask, num_classes, rng, name=mask_path.name)
        pairs.append(Pair(image_path.name, image, mask, positives))
    return pairs


def rare_pixels(
    mask: ImageSource,
    num_classes: int,
    rng: np.random.Generator,
    per_class: int = 2000,
    band: int = 1024,
    name: str = "mask",
) -> np.ndarray:
    """(P, 3) rows ``(y, x, class)``: up to ``per_class`` sampled pixels of every class but the
    most common one, read band by band; a label outside ``0 .. num_classes - 1`` (and
    ``IGNORE_INDEX``, unlabelled) is an InputError."""
    h, w = mask.shape_yx(0)
    found: dict[int, list[np.ndarray]] = {c: [] for c in range(num_classes)}
    counts = np.zeros(num_classes, np.int64)
    for y in range(0, h, band):
        labels = mask.read(0, y, 0, min(h, y + band), w)[0]
        if labels.dtype.kind not in "biu":
            raise InputError(
                f"mask {name} holds {labels.dtype} values, not integer labels",
                f"save masks as integer images of labels 0 .. {num_classes - 1}",
            )
        bad = (labels >= num_classes) | ((labels < 0) & (labels != IGNORE_INDEX))
        if bad.any():
            value = int(labels[bad].flat[0])
            raise InputError(
                f"mask {name} holds label {value} but the model has {num_classes} classes "
                f"(labels 0 .. {num_classes - 1}, {IGNORE_INDEX} for unlabelled)",
                "relabel the mask, or set head.num_classes in the model config to cover it",
            )
        labelled = labels[labels >= 0].astype(np.int64)  # IGNORE_INDEX (-1): unlabelled
        counts += np.bincount(labelled, minlength=num_classes)[:num_classes]
        for c in range(num_classes):
            ys, xs = np.nonzero(labels == c)
            if len(ys):
                take = rng.choice(len(ys), size=min(len(ys), per_class), replace=False)
                found[c].append(np.stack([ys[take] + y, xs[take], np.full(len(take), c)], axis=1))
    common = int(counts.argmax())
    rare = [np.concatenate(v) for c, v in found.items() if c != common and v]
    return np.concatenate(rare) if rare else np.zeros((0, 3), np.int64)


def _pick_positive(positives: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A rare-class pixel: first a class uniformly among those present, then one of its pixels."""
    classes = np.unique(positives[:, 2])
    rows = positives[positives[:, 2] == classes[rng.integers(len(classes))]]
    y, x, _ = rows[rng.integers(len(rows))]
    return int(y), int(x)


class ClassBalancer:
    """Batches that hold images of different classes (``train.balance_classes``).

    Where a class is present in some training images but not in others (e.g. "every object is A"
    in half the scenes, "B" in the rest), a batch drawn at random often holds one kind only, and
    the cheapest way to lower its loss is to guess that kind for the whole batch: the gradient
    that would teach the context to tell the images apart is buried under that guess, step after
    step. The balancer gives crop ``i`` of a batch the class ``order[i % n]`` of a fresh random
    order of those classes, picks an image holding it, and centres positive crops on it; so with
    two such classes and batches of two, every batch holds one image of each and the guess
    cancels. Classes present in every image (or none) need no balancing; with fewer than two
    classes to balance, images are drawn uniformly as without it.
    """

    def __init__(self, pairs: list[Pair]) -> None:
        present = [set(np.unique(p.positives[:, 2]).tolist()) for p in pairs]
        classes = sorted(set().union(*present)) if present else []
        self.holders = {
            c: [i for i, held in enumerate(present) if c in held]
            for c in classes
            if 0 < sum(c in held for held in present) < len(pairs)
        }
        self.classes = sorted(self.holders) if len(self.holders) >= 2 else []

    def batch_classes(self, batch_size: int, rng: np.random.Generator) -> list[int | None]:
        """The class of each crop of one batch (None: draw the image uniformly)."""
        if not self.classes:
            return [None] * batch_size
        order = rng.permutation(self.classes)
        return [int(order[i % len(order)]) for i in range(batch_size)]

    def pick(self, cls: int, rng: np.random.Generator) -> int:
        """The index of a random image that holds ``cls``."""
        holders = self.holders[cls]
        return holders[int(rng.integers(len(holders)))]


def sample_crop(
    pair: Pair,
    size: int,
    positive: bool,
    rng: np.random.Generator,
    augment: bool = True,
    cls: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A (C, size, size) image crop and its (size, size) mask (``IGNORE_INDEX`` past the image
    edges, where the image is zero-padded), with a random flip / 90-degree rotation if
    ``augment``. Positive crops are centred near a rare-class pixel (of class ``cls`` if
    given)."""
    h, w = pair.image.shape_yx(0)
    if positive and len(pair.positives):
        rows = pair.positives if cls is None else pair.positives[pair.positives[:, 2] == cls]
        cy, cx = _pick_positive(rows if len(rows) else pair.positives, rng)
        jitter = rng.integers(-size // 4, size // 4 + 1, size=2)
        y0 = int(np.clip(cy - size // 2 + jitter[0], 0, max(0, h - size)))
        x0 = int(np.clip(cx - size // 2 + jitter[1], 0, max(0, w - size)))
    else:
        y0 = int(rng.integers(0, max(1, h - size + 1)))
        x0 = int(rng.integers(0, max(1, w - size + 1)))
    image = pair.image.read_padded(0, y0, x0, size)
    mask = pair.mask.read_padded(0, y0, x0, size)[0].astype(np.int64)
    mask[min(size, h - y0) :, :] = IGNORE_INDEX  # padding past the image edge
    mask[:, min(size, w - x0) :] = IGNORE_INDEX
    k = int(rng.integers(4))  # drawn either way: the crops do not depend on ``augment``
    flip = rng.random() < 0.5
    if augment:
        image, mask = np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k)
        if flip:
            image, mask = image[:, :, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


class _RowWindow:
    """Lazy view of rows ``[y0, y1)`` of a level-0 array whose y axis is ``y_axis``."""

    def __init__(self, array: object, y_axis: int, y0: int, y1: int) -> None:
        self.array, self.y_axis, self.y0 = array, y_axis, y0
        shape = list(array.shape)  # type: ignore[attr-defined]
        shape[y_axis] = y1 - y0
        self.shape = tuple(shape)
        self.dtype = array.dtype  # type: ignore[attr-defined]

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        parts = list(key)
        rows = parts[self.y_axis]
        start = (rows.start or 0) + self.y0
        stop = (self.shape[self.y_axis] if rows.stop is None else rows.stop) + self.y0
        parts[self.y_axis] = slice(start, stop)
        return self.array[tuple(parts)]  # type: ignore[index]


def _rows(source: ImageSource, y0: int, y1: int) -> ImageSource:
    window = _RowWindow(source.levels[0], source.axes.index("y"), y0, y1)
    return ImageSource([window], source.axes, source.pixel_size, source.unit, source.name)


def split_pairs(pairs: list[Pair], val_fraction: float) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole files for validation; with a single file, hold out its bottom rows."""
    if val_fraction <= 0:
        return pairs, []
    if len(pairs) >= 2:
        count = min(len(pairs) - 1, max(1, round(len(pairs) * val_fraction)))
        return pairs[:-count], pairs[-count:]
    (pair,) = pairs
    h = pair.image.shape_yx(0)[0]
    cut = max(1, min(h - 1, round(h * (1 - val_fraction))))
    parts = []
    for y0, y1 in ((0, cut), (cut, h)):
        inside = (pair.positives[:, 0] >= y0) & (pair.positives[:, 0] < y1)
        positives = pair.positives[inside] - np.array([y0, 0, 0])
        parts.append(
            Pair(pair.name, _rows(pair.image, y0, y1), _rows(pair.mask, y0, y1), positives)
        )
    return [parts[0]], [parts[1]]
