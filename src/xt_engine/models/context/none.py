"""``none``: the region-only baseline. Tokens pass through unchanged; no state."""

from __future__ import annotations

import torch

from xt_engine.models.context.base import ContextEncoder, ContextState


class NoContext(ContextEncoder):
    kind = "none"
    stateless = True

    def run_chunk(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: ContextState,
        need_weights: bool,
    ) -> tuple[torch.Tensor, ContextState, torch.Tensor | None]:
        return tokens, state, None
