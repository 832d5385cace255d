"""A family of long-range dependency tasks: the class of every small object is set by
something outside its region.

Every scene is a ``(S, S)`` uint8 image of grey speckle with small bright square objects and, by
task, cues; its ``(S, S)`` uint8 mask has the classes :data:`CONTEXT_TASK_CLASS_NAMES`:
0 background, 1 object A, 2 object B, 3 cue. Objects look the same in both classes; at most one
object lies in a region (``region`` px squares of the image's grid), so the number of objects a
region sees says nothing either. Each scene is class-balanced by a fair coin where the task
allows it. The tasks (:data:`CONTEXT_TASKS`):

- ``near_cue``: two cross-shaped cues; an object within ``k`` regions (``k * region`` px,
  Euclidean, centre to centre) of a cue is A, one beyond ``k + 1/2`` regions is B (none in
  between). A cue at a distance within k regions.
- ``global_cue``: one cue anywhere, a ring or a cross (a coin per scene); every object is A
  where it is a ring, B where a cross. A global cue anywhere in the image.
- ``offset``: a small marker may sit exactly ``k`` regions above an object (a coin per
  object): A with the marker, B without. Objects only lie where such a marker fits. A cue at a
  fixed relative offset.
- ``count``: no cue; every object is A where the scene holds more than ``count_threshold``
  objects, B where fewer (counts near the threshold are not drawn). A count over the image.

An object is *hard* (:attr:`ContextScene.hard`) where its own region holds no cue pixel: a
region-only model cannot do better than chance on those. :func:`score_context_task` scores the
cue-dependent decision on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTEXT_TASK_CLASS_NAMES = ("background", "object_a", "object_b", "cue")
CONTEXT_TASK_CLASS_COLORS = ("#00000000", "#ff3030", "#30c0ff", "#ffd000")
CONTEXT_TASKS = ("near_cue", "global_cue", "offset", "count")
OBJECT_VALUE, CUE_VALUE = 210, 235


@dataclass
class ContextScene:
    """One scene of a context task.

    - ``image`` (S, S) uint8, ``mask`` (S, S) uint8 (classes in the module docstring).
    - ``objects`` (n, 5) int64 rows ``y0, x0, y1, x1, class`` (class 1 or 2).
    - ``hard`` (n,) bool: the object's region holds no cue pixel.
    """

    task: str
    image: np.ndarray
    mask: np.ndarray
    objects: np.ndarray
    hard: np.ndarray


def _cross(size: int) -> np.ndarray:
    shape = np.zeros((size, size), bool)
    bar = max(2, size // 5)
    lo = (size - bar) // 2
    shape[lo : lo + bar, :] = True
    shape[:, lo : lo + bar] = True
    return shape


def _ring(size: int) -> np.ndarray:
    shape = np.ones((size, size), bool)
    bar = max(2, size // 6)
    shape[bar:-bar, bar:-bar] = False
    return shape


class _Canvas:
    """The mask being drawn and the regions that hold an object or a cue."""

    def __init__(self, size: int, region: int, rng: np.random.Generator) -> None:
        self.size, self.region, self.rng = size, region, rng
        self.grid = size // region
        self.mask = np.zeros((size, size), np.uint8)
        self.has_object = np.zeros((self.grid, self.grid), bool)
        self.has_cue = np.zeros((self.grid, self.grid), bool)
        self.objects: list[list[int]] = []

    def free(self, y: int, x: int, h: int, w: int, pad: int = 2) -> bool:
        y0, x0 = max(0, y - pad), max(0, x - pad)
        return not self.mask[y0 : y + h + pad, x0 : x + w + pad].any()

    def place_in_region(
        self, row: int, col: int, h: int, w: int, margin: int = 3
    ) -> tuple[int, int] | None:
        """A free (y, x) for an h x w box inside region (row, col), or None."""
        r = self.region
        for _ in range(20):
            y = row * r + int(self.rng.integers(margin, r - h - margin + 1))
            x = col * r + int(self.rng.integers(margin, r - w - margin + 1))
            if self.free(y, x, h, w):
                return y, x
        return None

    def draw_cue(self, y: int, x: int, shape: np.ndarray) -> None:
        h, w = shape.shape
        self.mask[y : y + h, x : x + w][shape] = 3
        r = self.region
        self.has_cue[y // r : (y + h - 1) // r + 1, x // r : (x + w - 1) // r + 1] = True

    def draw_object(self, y: int, x: int, side: int, cls: int) -> None:
        self.mask[y : y + side, x : x + side] = cls
        self.has_object[y // self.region, x // self.region] = True
        self.objects.append([y, x, y + side, x + side, cls])


def _cue_size(region: int) -> int:
    return max(8, (region * 3) // 8)


def _random_cue(canvas: _Canvas, shape: np.ndarray) -> tuple[int, int]:
    """Draws ``shape`` inside a random region; its centre (y, x)."""
    g = canvas.grid
    while True:
        row, col = (int(v) for v in canvas.rng.integers(0, g, 2))
        spot = canvas.place_in_region(row, col, *shape.shape)
        if spot is not None:
            canvas.draw_cue(spot[0], spot[1], shape)
            return spot[0] + shape.shape[0] // 2, spot[1] + shape.shape[1] // 2


def _object_spots(canvas: _Canvas, side: int) -> list[tuple[int, int]]:
    """One candidate (y, x) in every region without a cue, in random order."""
    spots = []
    for row in range(canvas.grid):
        for col in range(canvas.grid):
            if not canvas.has_cue[row, col]:
                spot = canvas.place_in_region(row, col, side, side)
                if spot is not None:
                    spots.append(spot)
    order = canvas.rng.permutation(len(spots))
    return [spots[i] for i in order]


def make_context_scene(
    task: str,
    size: int = 512,
    region: int = 64,
    seed: int = 0,
    *,
    k: int = 2,
    num_objects: int = 12,
    count_threshold: int = 16,
) -> ContextScene:
    """A scene of ``task`` (module docstring); ``size`` a multiple of ``region``."""
    if task not in CONTEXT_TASKS:
        raise ValueError(f"unknown context task {task!r}; use one of {', '.join(CONTEXT_TASKS)}")
    if size % region:
        raise ValueError(f"size {size} is not a multiple of the region size {region}")
    rng = np.random.default_rng(seed)
    canvas = _Canvas(size, region, rng)
    side = max(4, region // 12)
    cue = _cue_size(region)
    half = side // 2
    if task == "near_cue":
        centres = np.array([_random_cue(canvas, _cross(cue)) for _ in range(2)], np.float64)
        near_px, far_px = k * region, (k + 0.5) * region
        wanted = {1: num_objects // 2, 2: num_objects - num_objects // 2}
        for y, x in _object_spots(canvas, side):
            d = np.hypot(centres[:, 0] - y - half, centres[:, 1] - x - half).min()
            cls = 1 if d <= near_px else 2 if d >= far_px else 0
            if cls and wanted[cls] > 0:
                wanted[cls] -= 1
                canvas.draw_object(y, x, side, cls)
    elif task == "global_cue":
        ring = bool(rng.random() < 0.5)
        _random_cue(canvas, _ring(cue) if ring else _cross(cue))
        for y, x in _object_spots(canvas, side)[:num_objects]:
            canvas.draw_object(y, x, side, 1 if ring else 2)
    elif task == "offset":
        marker = _ring(max(6, region // 6))
        placed = 0
        for y, x in _object_spots(canvas, side):
            if placed == num_objects:
                break
            if y < k * region:
                continue
            cls = 1 if rng.random() < 0.5 else 2
            if cls == 1:  # the marker's centre exactly k regions above the object's centre
                my = y + half - k * region - marker.shape[0] // 2
                mx = x + half - marker.shape[1] // 2
                if not canvas.free(my, mx, *marker.shape):
                    continue
                canvas.draw_cue(my, mx, marker)
            canvas.draw_object(y, x, side, cls)
            placed += 1
        # a region whose marker belongs to an object below is still hard for its own object:
        # "hard" below means "no cue in the object's region", which a marker above also meets
    else:  # count
        gap = max(2, count_threshold // 4)
        many = bool(rng.random() < 0.5)
        limit = canvas.grid**2
        n = (
            int(rng.integers(count_threshold + gap, min(limit, 2 * count_threshold) + 1))
            if many
            else int(rng.integers(max(1, count_threshold // 4), count_threshold - gap + 1))
        )
        for y, x in _object_spots(canvas, side)[:n]:
            canvas.draw_object(y, x, side, 1 if many else 2)

    image = rng.gamma(4.0, 15.0, size=(size, size))  # speckle, mean 60
    image[canvas.mask == 3] = CUE_VALUE
    image[(canvas.mask == 1) | (canvas.mask == 2)] = OBJECT_VALUE
    image = np.clip(image + rng.normal(0, 8, size=image.shape), 0, 255).astype(np.uint8)
    objects = np.array(canvas.objects, np.int64).reshape(-1, 5)
    rows, cols = objects[:, 0] // region, objects[:, 1] // region
    hard = ~canvas.has_cue[rows, cols]
    return ContextScene(task, image, canvas.mask, objects, hard)


def score_context_task(labels: np.ndarray, scene: ContextScene) -> dict[str, float]:
    """Predicted labels (S, S) -> counts of ``scene``'s hard objects decided right, by class.

    An object's decision is the majority of its pixels predicted A or B (1 or 2; a tie goes to
    B); an object none of whose pixels is predicted A or B counts as wrong (``missed``).
    Returns ``correct_a``, ``hard_a``, ``correct_b``, ``hard_b`` and ``missed`` (counts; add them
    over scenes, then :func:`context_accuracy`).
    """
    out = dict.fromkeys(("correct_a", "hard_a", "correct_b", "hard_b", "missed"), 0.0)
    for (y0, x0, y1, x1, cls), hard in zip(scene.objects, scene.hard, strict=True):
        if not hard:
            continue
        name = "a" if cls == 1 else "b"
        out[f"hard_{name}"] += 1
        patch = labels[y0:y1, x0:x1]
        a, b = int((patch == 1).sum()), int((patch == 2).sum())
        if a == b == 0:
            out["missed"] += 1
        elif (1 if a > b else 2) == cls:
            out[f"correct_{name}"] += 1
    return out


def context_accuracy(counts: dict[str, float]) -> float:
    """The context-dependent accuracy: the balanced accuracy of the A/B decision on hard
    objects (mean of the two classes' accuracies), so a constant answer scores 0.5 whatever the
    classes' frequencies (``count``'s A scenes hold more objects). NaN without hard objects."""
    rates = [
        counts[f"correct_{c}"] / counts[f"hard_{c}"] for c in ("a", "b") if counts[f"hard_{c}"]
    ]
    return float(np.mean(rates)) if rates else float("nan")
