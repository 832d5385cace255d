"""Per-class IoU and F1 from a confusion matrix."""

from __future__ import annotations

import numpy as np
import torch


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = truth, cols = prediction, over pixels whose target is >= 0."""
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
