"""Task heads that turn contextualised region tokens (+ the region's feature pyramid) into outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import HeadConfig
from xt_engine.errors import ConfigError


class SegmentationHead(nn.Module):
    """Fuses context tokens with the finest backbone features; returns full-resolution logits.

    Inputs: ``context`` (N, D, gh, gw) contextualised tokens laid out on the region's patch grid;
    ``features`` the region encoder pyramid, finest first, ``features[0]`` (N, C0, R/s0, R/s0).
    Output: logits (N, num_classes, R, R) for regions of ``region_size`` px.
    """

    def __init__(
        self, config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
    ) -> None:
        super().__init__()
        width = config.decoder_dim
        self.region_size = region_size
        self.context_proj = nn.Conv2d(context_dim, width, 1)
        self.detail_proj = nn.Conv2d(feature_channels[0], width, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1)
        )
        self.classify = nn.Conv2d(width, config.num_classes, 1)

    def forward(self, context: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        detail = self.detail_proj(features[0])
        ctx = F.interpolate(
            self.context_proj(context), size=detail.shape[-2:], mode="bilinear", align_corners=False
        )
        x = self.fuse(detail + ctx)
        logits = self.classify(x)
        return F.interpolate(
            logits, size=(self.region_size, self.region_size), mode="bilinear", align_corners=False
        )


def build_head(
    config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
) -> nn.Module:
    if config.task == "segmentation":
        return SegmentationHead(config, context_dim, feature_channels, region_size)
    raise ConfigError(
        f"head.task={config.task!r} is not available in this build yet", "use task 'segmentation'"
    )
