"""Per-class IoU and F1 from a confusion matrix."""

from __future__ import annotations

import numpy as np
import torch


def confusion(
    pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int
) -> np.ndarray:
    """(K, K) counts, rows = truth, cols = prediction, over pixels whose target is >= 0.
    Takes torch tensors (counted on their device) or numpy arrays of the same shape."""
    if isinstance(pred, np.ndarray) or isinstance(target, np.ndarray):
        true, guess = np.asarray(target).astype(np.int64), np.asarray(pred).astype(np.int64)
        valid = true >= 0
        index = true[valid] * num_classes + guess[valid]
        counts = np.bincount(index, minlength=num_classes * num_classes)
        return counts.reshape(num_classes, num_classes).astype(np.int64)
    valid = target >= 0
    index = target[valid] * num_classes + pred[valid]
    counts = torch.bincount(index.flatten(), minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def scores(matrix: np.ndarray) -> dict[str, list[float]]:
    """Per class: ``iou`` = TP / (TP + FP + FN), ``f1`` = 2TP / (2TP + FP + FN); NaN where the
    class is absent from both truth and prediction."""
    tp = np.diag(matrix).astype(np.float64)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {"iou": iou.tolist(), "f1": f1.tolist()}
