"""The composed xT model: region encoder -> context encoder -> head.

``XTModel`` receives its three parts (it builds nothing itself; see :mod:`.registry`). It streams:
call :meth:`init_state` once per image, then :meth:`forward` on chunks of regions in raster order,
passing the returned state back in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from xt_engine.config import XTConfig
from xt_engine.models.context import ContextEncoder, sincos_position_embedding
from xt_engine.models.region_encoder import RegionEncoder

# Normalisation used when the config gives none (ImageNet for 3 channels, 0.5/0.5 otherwise).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class RegionOutputs:
    """Per-region outputs of one chunk. ``logits`` (N, K, R, R) for segmentation."""

    logits: torch.Tensor


class XTModel(nn.Module):
    def __init__(
        self,
        config: XTConfig,
        region_encoder: RegionEncoder,
        context_encoder: ContextEncoder,
        head: nn.Module,
    ) -> None:
        super().__init__()
        self.config = config
        self.region_encoder = region_encoder
        self.context_encoder = context_encoder
        self.head = head
        dim = config.context_encoder.dim
        self.token_proj = nn.Conv2d(region_encoder.channels[-1], dim, 1)
        enc = config.region_encoder
        default_mean, default_std = (
            (_IMAGENET_MEAN, _IMAGENET_STD) if enc.in_chans == 3 else ((0.5,), (0.5,))
        )
        mean = torch.tensor(enc.mean or default_mean, dtype=torch.float32)
        std = torch.tensor(enc.std or default_std, dtype=torch.float32)
        self.register_buffer("pixel_mean", mean.expand(enc.in_chans).reshape(1, -1, 1, 1).clone())
        self.register_buffer("pixel_std", std.expand(enc.in_chans).reshape(1, -1, 1, 1).clone())

    @property
    def region_size(self) -> int:
        return self.config.tiling.region_size

    @property
    def token_grid(self) -> tuple[int, int]:
        """Patch-token grid (gh, gw) of one region: region_size / deepest stride."""
        side = self.region_size // self.region_encoder.reductions[-1]
        return side, side

    def init_state(self, batch_size: int = 1, device: torch.device | None = None) -> object:
        param = next(self.parameters())
        return self.context_encoder.init_state(batch_size, device or param.device, param.dtype)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` (N, C, R, R) scaled to [0, 1] -> normalised with the config's mean/std."""
        return (pixels - self.pixel_mean) / self.pixel_std

    def forward(
        self, pixels: torch.Tensor, region_rc: torch.Tensor, state: object
    ) -> tuple[RegionOutputs, object]:
        """Run one chunk of N regions of B images.

        Args:
            pixels: (B, N, C, R, R) in [0, 1] (see :meth:`normalize`), regions in raster order.
            region_rc: (N, 2) long, each region's (row, col) in the image's region grid.
            state: the context state returned for the previous chunk (or :meth:`init_state`).

        Returns:
            outputs with ``logits`` (B * N, K, R, R), and the next state.
        """
        b, n, c, r, _ = pixels.shape
        features = self.region_encoder(self.normalize(pixels.reshape(b * n, c, r, r)))
        tokens = self.token_proj(features[-1])  # (B*N, D, gh, gw)
        _, dim, gh, gw = tokens.shape
        seq = tokens.reshape(b, n, dim, gh * gw).permute(0, 1, 3, 2).reshape(b, n * gh * gw, dim)
        positions = _token_positions(region_rc, gh, gw)  # (N*gh*gw, 2)
        seq = seq + sincos_position_embedding(positions, dim).to(seq.dtype)[None]
        seq, state = self.context_encoder(seq, positions, state)
        context = seq.reshape(b * n, gh, gw, dim).permute(0, 3, 1, 2)
        return RegionOutputs(logits=self.head(context, features)), state


def _token_positions(region_rc: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """(N, 2) region (row, col) -> (N * gh * gw, 2) global token (row, col), raster in region."""
    ii, jj = torch.meshgrid(
        torch.arange(gh, device=region_rc.device),
        torch.arange(gw, device=region_rc.device),
        indexing="ij",
    )
    local = torch.stack([ii.reshape(-1), jj.reshape(-1)], dim=1)  # (gh*gw, 2)
    scale = torch.tensor([gh, gw], device=region_rc.device)
    return (region_rc[:, None, :] * scale + local[None]).reshape(-1, 2)
