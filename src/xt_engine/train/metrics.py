"""Per-class IoU and F1 from a confusion matrix, defined by the segmentation task
(:mod:`xt_engine.tasks.segmentation`)."""

from __future__ import annotations

from xt_engine.tasks.segmentation import confusion, scores

__all__ = ["confusion", "scores"]
