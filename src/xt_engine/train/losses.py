"""Losses: cross-entropy + soft dice for segmentation, focal loss for detection heat maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xt_engine.train.data import IGNORE_INDEX


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float = 1.0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``logits`` (N, K, H, W), ``target`` (N, H, W) long with ``IGNORE_INDEX`` for padding.

    Cross-entropy plus ``dice_weight`` x (1 - mean soft dice over the classes present in the
    batch, background excluded).
    """
    ce = F.cross_entropy(logits, target, weight=class_weights, ignore_index=IGNORE_INDEX)
    if dice_weight == 0:
        return ce
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    probs = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp_min(0), logits.shape[1]).permute(0, 3, 1, 2) * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    present[0] = False
    if not present.any():
        return ce
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + dice_weight * (1 - dice[present].mean())


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
