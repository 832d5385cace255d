"""Detection training from label masks (targets, loss, matched centres), defined by the
detection task (:mod:`xt_engine.tasks.detection_training`)."""

from __future__ import annotations

from xt_engine.tasks.detection_training import (
    detection_loss,
    detection_scores,
    detection_targets,
    focal_heatmap_loss,
    match_counts,
    region_targets,
)

__all__ = [
    "detection_loss",
    "detection_scores",
    "detection_targets",
    "focal_heatmap_loss",
    "match_counts",
    "region_targets",
]
