"""``none``: the region-only baseline. Tokens pass through unchanged; no state."""

from __future__ import annotations

import torch

from xt_engine.models.context.base import ContextEncoder, ContextState


class NoContext(ContextEncoder):
    kind = "none"

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, state: ContextState
    ) -> tuple[torch.Tensor, ContextState]:
        return tokens, state
