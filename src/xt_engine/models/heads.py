"""Task heads: contextualised region tokens (+ the region's feature pyramid) -> task outputs.

Every head takes ``context`` (N, D, gh, gw), the contextualised tokens laid out on each region's
patch grid, and ``features``, the region encoder pyramid finest first (``features[0]`` is
(N, C0, R / s0, R / s0)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import HeadConfig
from xt_engine.tasks.detection import decode_detections as decode_detections  # re-export


def segmentation_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class logits (N, K, H, W) -> labels (N, H, W) uint8, the first best class per pixel.

    Equal to ``logits.argmax(dim=1)``, but through ``max``: on CPU (torch 2.14) ``argmax`` over
    the channel dim of a contiguous NCHW tensor takes ~11 ms per 256 x 256 region, ``max`` 0.2.
    """
    return logits.max(dim=1).indices.to(torch.uint8)


class FusionTrunk(nn.Module):
    """Context tokens upsampled onto the finest feature map and fused: -> (N, W, R/s0, R/s0).

    Runs channels-last whatever layout the region encoder returns (ViT / Swin features come as
    NCHW): oneDNN's 3 x 3 convolutions are ~2x faster on CPU in that layout; values are the same.
    """

    def __init__(self, context_dim: int, finest_channels: int, width: int) -> None:
        super().__init__()
        self.context_proj = nn.Conv2d(context_dim, width, 1)
        self.detail_proj = nn.Conv2d(finest_channels, width, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, context: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        detail = self.detail_proj(features[0].contiguous(memory_format=torch.channels_last))
        ctx = F.interpolate(
            self.context_proj(context), size=detail.shape[-2:], mode="bilinear", align_corners=False
        )
        return F.gelu(self.fuse(detail + ctx))


class SegmentationHead(nn.Module):
    """-> logits (N, num_classes, R, R) at full region resolution."""

    def __init__(
        self, config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
    ) -> None:
        super().__init__()
        self.region_size = region_size
        self.trunk = FusionTrunk(context_dim, feature_channels[0], config.decoder_dim)
        self.classify = nn.Conv2d(config.decoder_dim, config.num_classes, 1)

    def forward(
        self, context: torch.Tensor, features: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        logits = self.classify(self.trunk(context, features))
        size = (self.region_size, self.region_size)
        return {"logits": F.interpolate(logits, size=size, mode="bilinear", align_corners=False)}


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
        nn.init.constant_(self.heatmap.bias, -math.log((1 - 0.1) / 0.1))  # prior 0.1

    def forward(
        self, context: torch.Tensor, features: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        x = self.trunk(context, features)
        return {"heatmap": self.heatmap(x), "log_size": self.size(x)}


class ClassificationHead(nn.Module):
    """Image-level logits (B, K) from pooled tokens (B, D): ``cls`` = LayerNorm -> Linear.

    ``cls_token`` (1, 1, D) is only used with ``pool="cls"``: the model runs it through the
    context encoder after the last region and feeds its output here.
    """

    def __init__(self, config: HeadConfig, context_dim: int) -> None:
        super().__init__()
        self.pool = config.pool
        if self.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, context_dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.cls = nn.Sequential(
            nn.LayerNorm(context_dim), nn.Linear(context_dim, config.num_classes)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.cls(pooled)


def build_head(
    config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
) -> nn.Module:
    if config.task == "segmentation":
        return SegmentationHead(config, context_dim, feature_channels, region_size)
    if config.task == "detection":
        return DetectionHead(config, context_dim, feature_channels, region_size)
    return ClassificationHead(config, context_dim)
