"""Bidirectional context: a forward and a backward encoder of the same kind, merged.

In a scene, what decides a region's class may lie *after* it in raster order. This wrapper runs
one encoder over the sequence and a second one over the reversed sequence and merges both with a
linear layer, so context reaches every token from both sides.

Two ways to run it:

- one call over the whole sequence (``forward``), e.g. a training crop or a small image;
- streaming in two passes (the engine): :meth:`forward_direction` over the chunks in order
  carrying the forward state, then :meth:`backward_direction` over the chunks in *reverse* order
  carrying the backward state, then :meth:`merge`. For causal kinds the two-pass result equals
  the whole-sequence call (tested).
"""

from __future__ import annotations

import torch
from torch import nn

from xt_engine.models.context.base import ContextEncoder, ContextState


class BidirectionalContext(ContextEncoder):
    passes = "two_pass"

    def __init__(self, forward_encoder: ContextEncoder, backward_encoder: ContextEncoder, dim: int):
        super().__init__()
        self.kind = f"bidirectional_{forward_encoder.kind}"
        self.forward_encoder = forward_encoder
        self.backward_encoder = backward_encoder
        self.merge_proj = nn.Linear(2 * dim, dim)

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[ContextState, ContextState]:
        return (
            self.forward_encoder.init_state(batch_size, device, dtype),
            self.backward_encoder.init_state(batch_size, device, dtype),
        )

    def run_chunk(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: ContextState,
        need_weights: bool,
    ) -> tuple[torch.Tensor, ContextState, torch.Tensor | None]:
        """Both directions over this call's tokens. The backward direction starts fresh here, so
        this is the exact bidirectional result only when the call holds the whole sequence.
        No single attention matrix exists for the merged result (weights: None)."""
        fwd_state, _ = state
        fwd, fwd_state = self.forward_direction(tokens, positions, fwd_state)
        fresh = self.backward_encoder.init_state(tokens.shape[0], tokens.device, tokens.dtype)
        bwd, bwd_state = self.backward_direction(tokens, positions, fresh)
        return self.merge(fwd, bwd), (fwd_state, bwd_state), None

    def forward_direction(
        self, tokens: torch.Tensor, positions: torch.Tensor, state: ContextState
    ) -> tuple[torch.Tensor, ContextState]:
        """Forward pass over one chunk (chunks in raster order)."""
        return self.forward_encoder(tokens, positions, state)

    def backward_direction(
        self, tokens: torch.Tensor, positions: torch.Tensor, state: ContextState
    ) -> tuple[torch.Tensor, ContextState]:
        """Backward pass over one chunk (call for chunks in reverse raster order); outputs come
        back in the chunk's original order."""
        out, state = self.backward_encoder(tokens.flip(1), positions.flip(0), state)
        return out.flip(1), state

    def merge(self, forward_out: torch.Tensor, backward_out: torch.Tensor) -> torch.Tensor:
        """(B, L, D) and (B, L, D) -> (B, L, D)."""
        return self.merge_proj(torch.cat([forward_out, backward_out], dim=-1))
