"""Segmentation: a class per pixel.

- Head: :class:`SegmentationHead`, the fusion trunk then a 1 x 1 classifier, logits
  (N, K, R, R) at full region resolution (``RegionOutputs.logits``).
- A region's results: labels (h, w) uint8 (:func:`segmentation_labels`) and, on request, the
  softmax probabilities (K, h, w) float16, cropped to the region's output tile; with overlapping
  regions and a ``SeamBlender`` the probabilities are blended with the earlier neighbours'
  first (:mod:`xt_engine.runtime.blending`) and the labels are their argmax.
- Training: :func:`segmentation_loss` (cross-entropy + soft dice) against the masks cut into
  regions; validation: a (K, K) confusion matrix (:func:`confusion`) -> per-class IoU and F1
  (:func:`scores`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import HeadConfig
from xt_engine.errors import ConfigError
from xt_engine.tasks.base import IGNORE_INDEX, RegionResult, Task, masks_to_regions
from xt_engine.tasks.trunk import FusionTrunk

if TYPE_CHECKING:
    from xt_engine.models.xt_model import RegionOutputs, XTModel
    from xt_engine.runtime.blending import SeamBlender
    from xt_engine.tasks.detection import BorderSuppression
    from xt_engine.tiling import Region
    from xt_engine.train.config import TrainConfig


def segmentation_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class logits (N, K, H, W) -> labels (N, H, W) uint8, the first best class per pixel.

    Equal to ``logits.argmax(dim=1)``, but through ``max``: on CPU (torch 2.14) ``argmax`` over
    the channel dim of a contiguous NCHW tensor takes ~11 ms per 256 x 256 region, ``max`` 0.2.
    """
    return logits.max(dim=1).indices.to(torch.uint8)


class SegmentationHead(nn.Module):
    """-> logits (N, num_classes, R, R) at full region resolution."""

    def __init__(
        self, config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
    ) -> None:
        super().__init__()
        self.region_size = region_size
        level = config.fusion_level
        if level >= len(feature_channels):
            raise ConfigError(
                f"head.fusion_level={level} is beyond this region encoder's "
                f"{len(feature_channels)} feature levels",
                f"use a level from 0 to {len(feature_channels) - 1}",
            )
        self.trunk = FusionTrunk(context_dim, feature_channels[level], config.decoder_dim, level)
        self.classify = nn.Conv2d(config.decoder_dim, config.num_classes, 1)

    def forward(
        self, context: torch.Tensor, features: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        logits = self.classify(self.trunk(context, features))
        size = (self.region_size, self.region_size)
        return {"logits": F.interpolate(logits, size=size, mode="bilinear", align_corners=False)}


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
    keep = target >= 0
    flat = target[keep] * num_classes + pred[keep]
    tally = torch.bincount(flat.flatten(), minlength=num_classes * num_classes)
    return tally.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


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


class SegmentationTask(Task):
    """Per-pixel classes (module docstring)."""

    name: ClassVar[str] = "segmentation"
    pixel_outputs: ClassVar[bool] = True
    trainable: ClassVar[bool] = True

    def build_head(
        self, config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
    ) -> nn.Module:
        return SegmentationHead(config, context_dim, feature_channels, region_size)

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
        """Labels (and probabilities) of each region's output tile: the centre crop of its
        logits (N, K, R, R), or with a ``blender`` its probabilities blended at the borders."""
        assert outputs.logits is not None
        if blender is not None:
            windows = outputs.logits.float().softmax(dim=1).cpu().numpy()  # (N, K, R, R)
            results = []
            for i, region in enumerate(regions):
                blended = blender.blend(region, windows[i])  # (K, h, w)
                labels = blended.argmax(axis=0).astype(np.uint8)
                results.append(
                    RegionResult(labels, blended.astype(np.float16) if probabilities else None)
                )
            return results
        batch_labels = segmentation_labels(outputs.logits).cpu().numpy()
        batch_probs = None
        if probabilities:
            batch_probs = outputs.logits.float().softmax(dim=1).half().cpu().numpy()
        m = regions[0].margin if regions else 0  # overlap: outputs are the centre tiles
        return [
            RegionResult(
                batch_labels[i, m : m + region.height, m : m + region.width],
                None
                if batch_probs is None
                else batch_probs[i, :, m : m + region.height, m : m + region.width],
            )
            for i, region in enumerate(regions)
        ]

    def loss(
        self,
        model: XTModel,
        outputs: dict[str, torch.Tensor],
        masks: torch.Tensor,
        cfg: TrainConfig,
        class_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        target = masks_to_regions(masks, model.region_size)
        return segmentation_loss(outputs["logits"].float(), target, cfg.dice_weight, class_weights)

    def empty_counts(self, config: HeadConfig) -> np.ndarray:
        return np.zeros((config.num_classes, config.num_classes), np.int64)

    def val_counts(
        self, model: XTModel, outputs: dict[str, torch.Tensor], masks: torch.Tensor
    ) -> np.ndarray:
        """The (K, K) confusion of the regions' labels against their masks."""
        target = masks_to_regions(masks, model.region_size)
        return confusion(
            segmentation_labels(outputs["logits"]), target, model.config.head.num_classes
        )

    def val_scores(self, counts: np.ndarray) -> dict[str, list[float]]:
        return scores(counts)
