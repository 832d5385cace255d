"""Events yielded by :func:`xt_engine.runtime.run_inference`.

A run yields exactly one :class:`Started`, then :class:`RegionDone` / :class:`Progress` as
batches finish, then exactly one :class:`Finished` (also when cancelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xt_engine.tiling import Region, RegionGrid


@dataclass(frozen=True)
class Started:
    total: int
    grid: RegionGrid
    level: int
    shape_yx: tuple[int, int]
    num_classes: int


@dataclass(frozen=True)
class RegionDone:
    """One region's results, cropped to its valid (unpadded) part.

    ``labels`` (h, w) uint8 class indices at the inference level, placed at ``region.y0, x0``
    (segmentation models; None for detection models).
    ``detections`` (detection models): (M, 6) float32 rows ``(y, x, class, score, height,
    width)`` with centres in the inference level's pixels (image frame, not region frame).
    ``attention`` (only when asked for): (h / s, w / s) float32 per token of the region, rounded
    up, where ``s = token_stride``; see :class:`xt_engine.models.RegionOutputs`.
    ``probabilities`` (only when asked for): (K, h, w) float16 softmax of the class logits.
    """

    region: Region
    labels: np.ndarray | None
    attention: np.ndarray | None = None
    token_stride: int = 0
    detections: np.ndarray | None = None
    probabilities: np.ndarray | None = None


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    regions_per_s: float
    eta_s: float


@dataclass(frozen=True)
class Finished:
    """The end of a run. Classification models add the image's class and its softmax
    probabilities over all classes (None for other tasks and for cancelled runs)."""

    done: int
    total: int
    seconds: float
    cancelled: bool
    output: str | None
    peak_rss_mb: float
    image_class: int | None = None
    image_probabilities: tuple[float, ...] | None = None


Event = Started | RegionDone | Progress | Finished
