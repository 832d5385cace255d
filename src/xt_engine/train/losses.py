"""Losses, defined by the tasks that own them (:mod:`xt_engine.tasks`): cross-entropy + soft
dice for segmentation, focal loss for detection heat maps."""

from __future__ import annotations

from xt_engine.tasks.detection_training import focal_heatmap_loss
from xt_engine.tasks.segmentation import segmentation_loss

__all__ = ["focal_heatmap_loss", "segmentation_loss"]
