"""Task heads, defined by the tasks that own them (:mod:`xt_engine.tasks`), re-exported here.

Every head takes ``context`` (N, D, gh, gw), the contextualised tokens laid out on each region's
patch grid, and ``features``, the region encoder pyramid finest first (``features[0]`` is
(N, C0, R / s0, R / s0)); the classification head takes pooled tokens (B, D).
"""

from __future__ import annotations

from torch import nn

from xt_engine.config import HeadConfig
from xt_engine.tasks import task_for
from xt_engine.tasks.classification import ClassificationHead
from xt_engine.tasks.detection import DetectionHead, decode_detections
from xt_engine.tasks.segmentation import SegmentationHead, segmentation_labels
from xt_engine.tasks.trunk import FusionTrunk

__all__ = [
    "ClassificationHead",
    "DetectionHead",
    "FusionTrunk",
    "SegmentationHead",
    "build_head",
    "decode_detections",
    "segmentation_labels",
]


def build_head(
    config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
) -> nn.Module:
    """The head of ``config.task`` (:meth:`xt_engine.tasks.Task.build_head`)."""
    return task_for(config).build_head(config, context_dim, feature_channels, region_size)
