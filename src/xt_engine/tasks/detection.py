"""Detection: CenterNet-style centres and box sizes; objects on region borders reported once.

:class:`DetectionTask` owns the head (:class:`DetectionHead`: centre heat map logits and log box
size per cell of the finest feature map, ``RegionOutputs.heatmap`` / ``log_size``), a region's
results (decoded rows in the level's pixels, border duplicates suppressed), and training
(targets from connected components of the label masks, focal loss, matched centres:
:mod:`.detection_training`).

A detection row is ``(y, x, class, score, height, width)``: the box centre and size in pixels
(float32 arrays of shape (M, 6)). :func:`decode_detections` turns one region's CenterNet heat map
into rows in region pixels; the runtime shifts them to the level's pixels and keeps those whose
centre lies in the region's output tile.

Regions are decoded independently, so an object straddling a tile border is seen by both regions
and both may report it. :class:`BorderSuppression`, fed the rows of every region in raster
order, drops a row when a row of the same class already reported by an earlier *neighbouring*
region (left, above-left, above, above-right) is the same object: their boxes overlap with IoU >
``head.border_iou``, or their centres lie in neighbouring cells of the heat-map grid (Chebyshev
distance one stride ``s``: the 3 x 3 peak rule :func:`decode_detections` applies inside a
region, carried across the border). Such an object is reported once, by the earlier region
(whose row is already written, so the choice cannot wait for a better score later).

Why both rules: a trained CenterNet head fires for an object centred on a border at the last
cell of one region and the first cell of the next, centres ``s`` px apart, and the second box is
often much smaller (its size is only supervised at the true centre cell): on the blob model of
``tests/xt_engine/test_train_detection.py`` the six such pairs in its three scenes had IoU
0.02 - 0.14, none above the default 0.3; with the cell rule each scene has one row per object.

Memory: only rows that can still meet a later neighbour's row are held, those whose box reaches
a band along the bottom or right edge of their tile (or whose centre lies within ``1.5 s`` of
it), and only for the current and the previous row of regions.

Band: if IoU(A, B) > t, the boxes' extents along y overlap by more than
``t * max(h_A, h_B)`` (the overlap area exceeds ``t`` times each box's area, and the x extent is
at most each box's width). B's centre lies at or beyond the border at ``Y`` (its region is
below), so A's bottom edge exceeds ``Y - h_B (1/2 - t)``; with ``h_B < h_A / t`` that is
``Y - h_A (1/(2t) - 1)``; the same holds along x. A row whose box ends further from the edge can
never be matched and is not kept.

Resuming: :meth:`BorderSuppression.seed_from_csv` loads the rows a store holds for the regions
an interrupted run finished. Held rows are always rounded exactly as the store writes them
(level-0 pixels to 0.01 px, see ``OutputStore._append_detections``), so a resumed run compares
against the same numbers as an uninterrupted one and reports the same rows.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import HeadConfig
from xt_engine.errors import ConfigError, InputError
from xt_engine.tasks.base import RegionResult, Task
from xt_engine.tasks.detection_training import (
    detection_loss,
    detection_scores,
    match_counts,
    region_targets,
)
from xt_engine.tasks.trunk import FusionTrunk
from xt_engine.tiling import Region, RegionGrid

if TYPE_CHECKING:
    from xt_engine.models.xt_model import RegionOutputs, XTModel
    from xt_engine.runtime.blending import SeamBlender
    from xt_engine.train.config import TrainConfig


class DetectionHead(nn.Module):
    """CenterNet-style: centre heat map logits (N, K, R/s0, R/s0) and log box size
    (N, 2, R/s0, R/s0) in pixels (height, width); decode with :func:`decode_detections`."""

    def __init__(
        self, config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
    ) -> None:
        super().__init__()
        self.trunk = FusionTrunk(context_dim, feature_channels[0], config.decoder_dim)
        self.heatmap = nn.Conv2d(config.decoder_dim, config.num_classes, 1)
        self.size = nn.Conv2d(config.decoder_dim, 2, 1)
        assert self.heatmap.bias is not None
        nn.init.constant_(self.heatmap.bias, -math.log((1 - 0.1) / 0.1))  # prior 0.1

    def forward(
        self, context: torch.Tensor, features: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        x = self.trunk(context, features)
        return {"heatmap": self.heatmap(x), "log_size": self.size(x)}


def decode_detections(
    heatmap_logits: torch.Tensor,
    log_size: torch.Tensor,
    stride: int,
    threshold: float = 0.3,
    max_detections: int = 100,
    *,
    head: HeadConfig | None = None,
) -> torch.Tensor:
    """Peaks of one region's heat map -> (M, 6) rows ``(y, x, class, score, height, width)``.

    ``heatmap_logits`` (K, h, w), ``log_size`` (2, h, w); positions are region pixels at the
    centre of the peak cell (``(i + 0.5) * stride``), sizes in pixels. A peak is a cell that equals
    the 3x3 max of its class map and scores at least ``threshold``; the best ``max_detections``.
    ``head``: take ``threshold`` and ``max_detections`` from the model's head config instead
    (``detection_threshold``, ``max_detections``).
    """
    if head is not None:
        threshold, max_detections = head.detection_threshold, head.max_detections
    scores = heatmap_logits.sigmoid()
    peaks = scores == F.max_pool2d(scores[None], 3, stride=1, padding=1)[0]
    scores = torch.where(peaks & (scores >= threshold), scores, torch.zeros_like(scores))
    k, h, w = scores.shape
    flat = scores.reshape(-1)
    count = min(max_detections, int((flat > 0).sum()))
    top_scores, top_index = flat.topk(count)
    cls, rest = top_index // (h * w), top_index % (h * w)
    iy, ix = rest // w, rest % w
    sizes = log_size[:, iy, ix].exp().T  # (M, 2)
    return torch.stack(
        [
            (iy + 0.5) * stride,
            (ix + 0.5) * stride,
            cls.to(scores.dtype),
            top_scores,
            sizes[:, 0],
            sizes[:, 1],
        ],
        dim=1,
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of centre-size boxes ``a`` (M, 4) and ``b`` (P, 4), columns ``(y, x, h, w)`` -> (M, P)."""
    a0, a1 = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b0, b1 = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None).prod(axis=2)
    union = a[:, None, 2:].prod(axis=2) + b[None, :, 2:].prod(axis=2) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class BorderSuppression:
    """Drops detections already reported by an earlier neighbouring region (module docstring).

    ``grid``: the run's region grid; ``iou``: ``head.border_iou``; ``downsample``: level-0
    pixels per pixel of the run's level along (y, x) (rows are in the level's pixels; the store
    writes them in level-0 pixels); ``stride``: the heat map's cell in the level's pixels
    (``XTModel.output_stride``; 0: the IoU rule only). Held per region: (P, 5) float64
    ``(y, x, class, h, w)``.

    Example::

        suppress = BorderSuppression(grid, head.border_iou, stride=model.output_stride)
        for region, rows in decoded_in_raster_order:
            reported = suppress.filter(region, rows)  # (M', 6), M' <= M
    """

    def __init__(
        self,
        grid: RegionGrid,
        iou: float,
        downsample: tuple[float, float] = (1.0, 1.0),
        stride: float = 0.0,
    ) -> None:
        if not 0.0 < iou <= 1.0:
            raise ConfigError(f"border IoU {iou} is not in (0, 1]", "set head.border_iou to 0.3")
        self.grid = grid
        self.iou = float(iou)
        self.downsample = (float(downsample[0]), float(downsample[1]))
        self.band = max(0.0, 0.5 / self.iou - 1.0)  # of the box's own size, see the docstring
        self.reach = 1.5 * float(stride)  # centres closer (Chebyshev) sit in neighbouring cells
        self._held: dict[int, np.ndarray] = {}

    @classmethod
    def for_head(
        cls,
        grid: RegionGrid,
        head: HeadConfig,
        downsample: tuple[float, float] = (1.0, 1.0),
        stride: float = 0.0,
    ) -> BorderSuppression | None:
        """A suppressor for a detection head's run, None for the other tasks."""
        if head.task != DetectionTask.name:
            return None
        return cls(grid, head.border_iou, downsample, stride)

    @property
    def held_rows(self) -> int:
        """Rows held now (bounded by the band rows of two rows of regions)."""
        return sum(len(v) for v in self._held.values())

    def earlier_neighbours(self, index: int) -> list[int]:
        """Raster indices of the region's left, above-left, above and above-right neighbours."""
        cols = self.grid.cols
        row, col = divmod(index, cols)
        out = [index - 1] if col > 0 else []
        if row > 0:
            up = index - cols
            out += ([up - 1] if col > 0 else []) + [up] + ([up + 1] if col + 1 < cols else [])
        return out

    def filter(self, region: Region, rows: np.ndarray) -> np.ndarray:
        """``rows`` (M, 6) of ``region`` in level pixels -> the rows to report (M', 6), in their
        order; call once per region, in raster order (regions of a resumed run may be missing)."""
        for index in [i for i in self._held if i // self.grid.cols < region.row - 1]:
            del self._held[index]
        refs = [self._held[i] for i in self.earlier_neighbours(region.index) if i in self._held]
        if len(rows) and refs:
            ref = np.concatenate(refs)
            same = rows[:, 2:3].astype(np.int64) == ref[None, :, 2].astype(np.int64)
            boxes = rows[:, [0, 1, 4, 5]].astype(np.float64)
            match = box_iou(boxes, ref[:, [0, 1, 3, 4]]) > self.iou
            if self.reach:
                apart = np.abs(boxes[:, None, :2] - ref[None, :, :2]).max(axis=2)
                match |= apart < self.reach
            rows = rows[~(match & same).any(axis=1)]
        self._hold(region, self._as_stored(rows))
        return rows

    def seed(self, region: Region, rows: Iterable[tuple[float, float, int, float, float]]) -> None:
        """Hold rows already reported for ``region`` (done by an interrupted run): level-pixel
        ``(y, x, class, height, width)``, as read back from the store."""
        self._hold(region, np.asarray(list(rows), np.float64).reshape(-1, 5))

    def seed_from_csv(self, path: Path, done: set[int]) -> None:
        """Hold the rows of ``path`` (a store's ``detections.csv``: level-0 pixels) of the
        regions in ``done`` that a region still to run has as an earlier neighbour."""
        if not path.exists():
            return
        todo = set(range(len(self.grid))) - done
        wanted = {i for i in done if any(j in todo for j in self._later_neighbours(i))}
        dy, dx = self.downsample
        rows: dict[int, list[tuple[float, float, int, float, float]]] = {}
        try:
            with path.open(newline="") as handle:
                for record in csv.DictReader(handle):
                    index = int(record["region"])
                    if index in wanted:
                        rows.setdefault(index, []).append(
                            (
                                float(record["y"]) / dy,
                                float(record["x"]) / dx,
                                int(record["class"]),
                                float(record["height"]) / dy,
                                float(record["width"]) / dx,
                            )
                        )
        except (KeyError, ValueError) as err:
            raise InputError(
                f"{path} is damaged ({type(err).__name__}: {err})",
                "write a new --out instead of resuming",
            ) from err
        for index, held in rows.items():
            self.seed(self.grid.region(index), held)

    def _later_neighbours(self, index: int) -> list[int]:
        cols, n = self.grid.cols, len(self.grid)
        row, col = divmod(index, cols)
        out = [index + 1] if col + 1 < cols else []
        down = index + cols
        if down < n:
            out += ([down - 1] if col > 0 else []) + [down] + ([down + 1] if col + 1 < cols else [])
        return [i for i in out if i < n]

    def _as_stored(self, rows: np.ndarray) -> np.ndarray:
        """(M, 6) level-pixel rows -> (M, 5) ``(y, x, class, h, w)`` as the store writes and
        :meth:`seed_from_csv` reads them back (level-0 pixels to 0.01 px)."""
        dy, dx = self.downsample
        out = [
            (
                float(f"{y * dy:.2f}") / dy,
                float(f"{x * dx:.2f}") / dx,
                int(cls),
                float(f"{h * dy:.2f}") / dy,
                float(f"{w * dx:.2f}") / dx,
            )
            for y, x, cls, _, h, w in rows.tolist()
        ]
        return np.asarray(out, np.float64).reshape(-1, 5)

    def _hold(self, region: Region, rows: np.ndarray) -> None:
        """Keep the rows whose box reaches the bottom or right band of the region's tile (only
        where the tile has a later neighbour on that side)."""
        if not len(rows):
            return
        slack = 1.0  # px, beyond the bound: rounding never decides what is held
        y, x, _, h, w = rows.T
        keep = np.zeros(len(rows), bool)
        if region.row + 1 < self.grid.rows:
            keep |= y + np.maximum(h * (0.5 + self.band), self.reach) + slack >= region.y1
        if region.col + 1 < self.grid.cols:
            keep |= x + np.maximum(w * (0.5 + self.band), self.reach) + slack >= region.x1
        if keep.any():
            self._held[region.index] = rows[keep]


class DetectionTask(Task):
    """Objects as centres with box sizes (module docstring); stride ``s``: the heat map's cell,
    ``XTModel.output_stride`` px of the region."""

    name: ClassVar[str] = "detection"
    trainable: ClassVar[bool] = True

    def build_head(
        self, config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
    ) -> nn.Module:
        return DetectionHead(config, context_dim, feature_channels, region_size)

    def region_results(
        self,
        model: XTModel,
        regions: list[Region],
        outputs: RegionOutputs,
        *,
        probabilities: bool = False,
        blender: SeamBlender | None = None,
        suppressor: BorderSuppression | None = None,
    ) -> list[RegionResult]:
        """Each region's peaks (:func:`decode_detections`, the model's head config) whose
        centre lies in its output tile, in the level's pixels; without those a ``suppressor``
        finds already reported by an earlier neighbouring region."""
        assert outputs.heatmap is not None and outputs.log_size is not None
        m = regions[0].margin if regions else 0  # overlap: outputs are the centre tiles
        results = []
        for i, region in enumerate(regions):
            rows = decode_detections(
                outputs.heatmap[i].float(),
                outputs.log_size[i].float(),
                model.output_stride,
                head=model.config.head,
            )
            rows[:, :2] -= m
            inside = (rows[:, :2] >= 0).all(dim=1)
            inside &= (rows[:, 0] < region.height) & (rows[:, 1] < region.width)
            found = rows[inside].cpu().numpy().astype(np.float32)  # (M, 6) level pixels
            found[:, 0] += region.y0
            found[:, 1] += region.x0
            detections = found if suppressor is None else suppressor.filter(region, found)
            results.append(RegionResult(detections=detections))
        return results

    def targets(self, model: XTModel, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Targets of mask crops (B, S, S) per region (:func:`.detection_training.region_targets`)."""
        return region_targets(
            masks, model.config.head.num_classes, model.output_stride, model.region_size
        )

    def loss(
        self,
        model: XTModel,
        outputs: dict[str, torch.Tensor],
        masks: torch.Tensor,
        cfg: TrainConfig,
        class_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = self.targets(model, masks)
        return detection_loss(
            outputs["heatmap"].float(),
            outputs["log_size"].float(),
            t["heat"],
            t["log_size"],
            t["centres"][:, 0],
        )

    def empty_counts(self, config: HeadConfig) -> np.ndarray:
        return np.zeros((config.num_classes, 3), np.int64)

    def val_counts(
        self, model: XTModel, outputs: dict[str, torch.Tensor], masks: torch.Tensor
    ) -> np.ndarray:
        """(K, 3) true positives, false positives, false negatives of the regions' decoded
        peaks against their centres, matched within 1.5 cells."""
        k, stride = model.config.head.num_classes, model.output_stride
        heat = self.targets(model, masks)["heat"]
        counts = self.empty_counts(model.config.head)
        for i in range(len(heat)):
            peaks = decode_detections(
                outputs["heatmap"][i].float(),
                outputs["log_size"][i].float(),
                stride,
                head=model.config.head,
            )
            counts += match_counts(peaks, heat[i], k, 1.5, stride)
        return counts

    def val_scores(self, counts: np.ndarray) -> dict[str, list[float]]:
        return detection_scores(counts)
