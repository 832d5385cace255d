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


def decode_detections(
    heatmap_logits: torch.Tensor,
    log_size: torch.Tensor,
    stride: int,
    threshold: float = 0.3,
    max_detections: int = 100,
) -> torch.Tensor:
    """Peaks of one region's heat map -> (M, 6) rows ``(y, x, class, score, height, width)``.

    ``heatmap_logits`` (K, h, w), ``log_size`` (2, h, w); positions are region pixels at the
    centre of the peak cell (``(i + 0.5) * stride``), sizes in pixels. A peak is a cell that equals
    the 3x3 max of its class map and scores at least ``threshold``; the best ``max_detections``.
    """
    scores = heatmap_logits.sigmoid()
    peaks = scores == F.max_pool2d(scores[None], 3, stride=1, padding=1)[0]
    scores = torch.where(peaks & (scores >= threshold), scores, torch.zeros_like(scores))
    k, h, w = scores.shape
    flat = scores.reshape(-1)
    count = min(max_detections, int((flat > 0).sum()))
    top_scores, top_index = flat.topk(count)
    cls, rest = top_index // (h * w), top_index % (h * w)
    iy, ix = rest // w, rest % w
    sizes = log_size[:, iy, ix].exp().T  # (M, 2)
    return torch.stack(
        [
            (iy + 0.5) * stride,
            (ix + 0.5) * stride,
            cls.to(scores.dtype),
            top_scores,
            sizes[:, 0],
            sizes[:, 1],
        ],
        dim=1,
    )
