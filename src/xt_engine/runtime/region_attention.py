"""Where one region attends across the image: the clicked-region view of the attention export.

For a region, the model's context encoder is replayed over a window of regions around it
(``memory_tokens`` worth on each side it can see) and the last layer's attention of the
region's tokens over every key is mapped back to the keys' 2-D token positions. Causal kinds see
the window before the region (and the region's own batch); bidirectional models add their
backward encoder over the window after it. Mamba's weights are its implicit attention within the
region's batch. The replay starts from a fresh state one memory length back, so memory hidden
states are recomputed from that point (exact when the image starts inside the window).

With ``overlap`` the grid is the run's overlap-tile grid (regions ``R - 2 overlap`` px apart, each
reading ``overlap`` px beyond its tile) and tokens take the run's physical positions, so the
neighbours' tokens over the same pixels share a cell of the map (their weights add up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from xt_engine.errors import ConfigError, InputError
from xt_engine.io import open_image
from xt_engine.models import XTModel
from xt_engine.models.context import BidirectionalContext, ContextEncoder
from xt_engine.runtime.input_values import prepare_input
from xt_engine.runtime.region_reader import RegionReader
from xt_engine.runtime.schedule import ContextSchedule
from xt_engine.tiling import RegionGrid


@dataclass(frozen=True)
class RegionAttention:
    """``weights`` over the grid's token positions, summing to 1: (rows * gh, cols * gw), or
    ((rows - 1) * step + gh, ...) with ``step`` tokens between overlapping regions;
    ``token_stride`` level pixels per token; ``box`` the grid's (y0, x0, y1, x1) at the level.
    Cell ``(i, j)`` of ``weights`` starts at level pixel ``box[:2] - margin + (i, j) * stride``
    (``margin``: the grid's overlap)."""

    weights: np.ndarray
    token_stride: int
    box: tuple[int, int, int, int]
    region_index: int
    margin: int = 0


def region_attention(
    image: object,
    model: XTModel,
    region_index: int,
    *,
    level: int = 0,
    roi: tuple[int, int, int, int] | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    overlap: int = 0,
) -> RegionAttention:
    source = open_image(image)
    grid = RegionGrid.for_image(source.shape_yx(level), model.region_size, roi, overlap)
    if not 0 <= region_index < len(grid):
        raise InputError(
            f"region {region_index} is outside the grid of {len(grid)} regions",
            "click inside the image",
        )
    device = torch.device(device)
    model = model.to(device).eval()
    gh, gw = model.token_grid
    per_region = gh * gw
    stride = model.region_size // gh
    step = grid.step // stride if overlap else None  # tokens between region origins (the run's)
    memory = model.config.context_encoder.memory_tokens
    reach = math.ceil(memory / per_region) if memory else 0
    chunk_size = ContextSchedule.for_model(model, len(grid)).chunk_regions  # the run's chunks
    start = region_index // chunk_size * chunk_size
    stop = min(len(grid), start + chunk_size)
    context = model.context_encoder
    directions = (
        [(context.forward_encoder, False), (context.backward_encoder, True)]
        if isinstance(context, BidirectionalContext)
        else [(context, False)]
    )
    lo, hi = max(0, start - reach), min(len(grid), stop + (reach if len(directions) == 2 else 0))
    read_source, scale = prepare_input(source, model.config)
    reader = RegionReader(
        read_source, level, grid, scale, device, model.config.tiling.pad_value, read_source.nodata
    )
    tokens, positions = {}, {}
    with torch.inference_mode():
        for regions, pixels, rc in reader.batches(
            [list(range(i, min(i + batch_size, hi))) for i in range(lo, hi, batch_size)], None
        ):
            _, seq, pos = model.encode(pixels, rc, step)
            for n, region in enumerate(regions):
                tokens[region.index] = seq[:, n * per_region : (n + 1) * per_region]
                positions[region.index] = pos[n * per_region : (n + 1) * per_region]
        rows, cols = (grid.rows - 1) * (step or gh) + gh, (grid.cols - 1) * (step or gw) + gw
        heat = np.zeros((rows, cols), dtype=np.float64)
        for encoder, backward in directions:
            before = list(range(hi - 1, stop - 1, -1)) if backward else list(range(lo, start))
            chunk = list(range(stop - 1, start - 1, -1)) if backward else list(range(start, stop))
            key_pos, weights, query = _replay(
                encoder,
                tokens,
                positions,
                before,
                chunk,
                region_index,
                chunk_size,
                per_region,
                backward,
            )
            row = weights[query].mean(dim=0).double().cpu().numpy()
            np.add.at(heat, (key_pos[:, 0], key_pos[:, 1]), row / max(row.sum(), 1e-12))
    heat /= len(directions)
    return RegionAttention(heat.astype(np.float32), stride, grid.box, region_index, grid.overlap)


def _replay(
    encoder: ContextEncoder,
    tokens: dict,
    positions: dict,
    before: list[int],
    chunk: list[int],
    region: int,
    chunk_size: int,
    per_region: int,
    backward: bool,
) -> tuple[np.ndarray, torch.Tensor, slice]:
    """Feed ``before`` in context chunks (state carried), then ``chunk`` with attention; returns the
    keys' (row, col) positions (K, 2), the weights (L, K) and the clicked region's query rows."""

    def gather(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens of ``indices`` in raster order, reversed as a whole for the backward pass."""
        ordered = sorted(indices)
        seq = torch.cat([tokens[i] for i in ordered], dim=1)
        pos = torch.cat([positions[i] for i in ordered], dim=0)
        return (seq.flip(1), pos.flip(0)) if backward else (seq, pos)

    state = encoder.init_state(1, next(iter(tokens.values())).device, torch.float32)
    fed: list[torch.Tensor] = []
    for i in range(0, len(before), chunk_size):
        seq, pos = gather(before[i : i + chunk_size])
        _, state = encoder(seq, pos, state)
        fed.append(pos)
    seq, pos = gather(chunk)
    _, _, weights = encoder.forward_with_attention(seq, pos, state)
    if weights is None:
        raise ConfigError(
            f"the {encoder.kind!r} context encoder exports no attention matrix here",
            "use the attention overlay (attention received per token) instead",
        )
    length, keys = seq.shape[1], weights.shape[-1]
    history = torch.cat(fed, dim=0) if fed else pos[:0]
    key_pos = torch.cat([history[len(history) - (keys - length) :], pos], dim=0)
    at = chunk.index(region) * per_region
    return key_pos.cpu().numpy(), weights[0], slice(at, at + per_region)
