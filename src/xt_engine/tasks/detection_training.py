"""Detection training from label masks: objects are connected components.

Every connected component of a non-zero mask value ``v`` is one object of class ``v`` (heat map
channel ``v``; channel 0, background, never holds a centre, so class indices and names mean the
same in segmentation and detection configs). Targets live on the head's grid (stride ``s``, the
region encoder's finest reduction):

- ``heat`` (B, K, S/s, S/s): a Gaussian per object around its centre cell (exactly 1 there),
  sigma ``max(0.75, sqrt(h * w) / (3 s))`` cells, overlapping objects keep the maximum;
- ``log_size`` (B, 2, S/s, S/s): ``log(height), log(width)`` of the object's box in px at its
  centre cell; ``centres`` (B, S/s, S/s) bool marks those cells;
- :func:`region_targets` cuts them into regions, as the head's outputs are laid out.

Loss (:func:`detection_loss`): CenterNet focal loss on the heat map (:func:`focal_heatmap_loss`)
+ ``size_weight`` x L1 on the log size at centres. Validation (:func:`match_counts`,
:func:`detection_scores`): decoded peaks matched greedily (best score first) to ground-truth
centres of the same class within ``match_cells`` cells -> per-class precision, recall, F1.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from xt_engine.tasks.base import crops_to_regions


def detection_targets(
    masks: np.ndarray, num_classes: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``masks`` (B, S, S) int (negative = padding) -> heat, log_size, centres (module doc)."""
    b, s, _ = masks.shape
    g = s // stride
    heat = np.zeros((b, num_classes, g, g), np.float32)
    log_size = np.zeros((b, 2, g, g), np.float32)
    centres = np.zeros((b, g, g), bool)
    yy, xx = np.mgrid[0:g, 0:g]
    for i in range(b):
        for cls in range(1, num_classes):
            components, count = ndimage.label(masks[i] == cls)
            for box in ndimage.find_objects(components)[:count]:
                h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
                cy = min(g - 1, int((box[0].start + h / 2) // stride))
                cx = min(g - 1, int((box[1].start + w / 2) // stride))
                sigma = max(0.75, math.sqrt(h * w) / (3 * stride))
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
                np.maximum(heat[i, cls], blob.astype(np.float32), out=heat[i, cls])
                heat[i, cls, cy, cx] = 1.0
                log_size[i, :, cy, cx] = (math.log(h), math.log(w))
                centres[i, cy, cx] = True
    return heat, log_size, centres


def region_targets(
    masks: torch.Tensor, num_classes: int, stride: int, region: int
) -> dict[str, torch.Tensor]:
    """Targets of mask crops (B, S, S) cut into regions like the head's outputs (batch-major,
    raster order): ``heat`` (B * N, K, R/s, R/s), ``log_size`` (B * N, 2, R/s, R/s),
    ``centres`` (B * N, 1, R/s, R/s) bool, on the masks' device."""
    heat, log_size, centres = detection_targets(masks.cpu().numpy(), num_classes, stride)
    maps = {"heat": heat, "log_size": log_size, "centres": centres[:, None]}
    return {
        key: crops_to_regions(torch.from_numpy(value).to(masks.device), region // stride)[
            0
        ].flatten(0, 1)
        for key, value in maps.items()
    }


def focal_heatmap_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet focal loss. ``logits`` and ``target`` (N, K, h, w); target is a Gaussian-splat
    heat map in [0, 1] with exactly 1 at object centres. Normalised by the number of centres."""
    pred = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(pred) * (1 - pred) ** alpha * pos
    neg_loss = -torch.log(1 - pred) * pred**alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1.0)


def detection_loss(
    heatmap_logits: torch.Tensor,
    log_size_pred: torch.Tensor,
    heat: torch.Tensor,
    log_size: torch.Tensor,
    centres: torch.Tensor,
    size_weight: float = 0.1,
) -> torch.Tensor:
    """(N, K, h, w) logits, (N, 2, h, w) predicted log size, targets as from
    :func:`detection_targets` (regions batch-major) -> scalar loss."""
    loss = focal_heatmap_loss(heatmap_logits, heat)
    if centres.any():
        mask = centres[:, None].expand_as(log_size)
        loss = loss + size_weight * F.l1_loss(log_size_pred[mask], log_size[mask])
    return loss


def match_counts(
    peaks: torch.Tensor, heat: torch.Tensor, num_classes: int, match_cells: float, stride: int
) -> np.ndarray:
    """(K, 3) true positives, false positives, false negatives of one region's decoded
    ``peaks`` (M, 6) rows ``(y, x, class, score, h, w)`` in px against the exact-1 centre
    cells of ``heat`` (K, h, w)."""
    counts = np.zeros((num_classes, 3), np.int64)
    for cls in range(num_classes):
        truth = (heat[cls] == 1).nonzero().float()  # (T, 2) cells
        rows = peaks[peaks[:, 2] == cls]
        rows = rows[rows[:, 3].argsort(descending=True)]
        cells = rows[:, :2] / stride - 0.5
        free = torch.ones(len(truth), dtype=torch.bool)
        for cell in cells:
            if len(truth):
                dist = (truth - cell).norm(dim=1).masked_fill(~free, float("inf"))
                best = int(dist.argmin())
                if dist[best] <= match_cells:
                    free[best] = False
                    counts[cls, 0] += 1
                    continue
            counts[cls, 1] += 1
        counts[cls, 2] += int(free.sum())
    return counts


def detection_scores(counts: np.ndarray) -> dict[str, list[float]]:
    """(K, 3) TP, FP, FN -> per-class ``precision``, ``recall``, ``f1`` (NaN where undefined)."""
    tp, fp, fn = (counts[:, i].astype(np.float64) for i in range(3))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist()}
