"""The fusion trunk the dense heads share (segmentation, detection): context tokens on the
finest feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FusionTrunk(nn.Module):
    """Context tokens upsampled onto feature map ``level`` of the pyramid (0: the finest) and
    fused: -> (N, W, R/s, R/s) at that level's stride s. A coarser level costs less: the two
    3 x 3 convolutions run on (s / s0)^2 times fewer pixels.

    Runs channels-last whatever layout the region encoder returns (ViT / Swin features come as
    NCHW): oneDNN's 3 x 3 convolutions are ~2x faster on CPU in that layout; values are the same.
    """

    def __init__(self, context_dim: int, detail_channels: int, width: int, level: int = 0) -> None:
        super().__init__()
        self.level = level
        self.context_proj = nn.Conv2d(context_dim, width, 1)
        self.detail_proj = nn.Conv2d(detail_channels, width, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, context: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        detail = self.detail_proj(
            features[self.level].contiguous(memory_format=torch.channels_last)
        )
        ctx = F.interpolate(
            self.context_proj(context), size=detail.shape[-2:], mode="bilinear", align_corners=False
        )
        return F.gelu(self.fuse(detail + ctx))
