"""``sliding_window``: Longformer-style causal local attention, streamed chunk by chunk.

Token ``t`` (absolute index in the image's token sequence) attends to the tokens ``s`` with
``t - window <= s <= t`` (itself and the previous ``window`` tokens), where ``window`` is
``config.memory_tokens``. Optionally the first ``num_global`` tokens of the whole sequence are
global: every later token attends to them as well, however far back they are.

Each layer keeps, as explicit state, the last ``window`` inputs it saw and the inputs of the global
tokens; a running count of tokens seen gives every key and query its absolute index, from which the
band mask is built. Running a sequence in chunks with carried state therefore equals running it
whole, for any chunk size.

State: :class:`SlidingWindowState` with ``seen`` (int), ``recent`` (one tensor (B, W', D) per
layer, W' = min(seen, window)) and ``global_tokens`` (one tensor (B, G', D) per layer,
G' = min(seen, num_global)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from xt_engine.config import ContextEncoderConfig
from xt_engine.models.context.base import (
    ContextEncoder,
    PreNormAttentionBlock,
    masked_attention,
)


@dataclass
class SlidingWindowState:
    """What a :class:`SlidingWindowContext` carries from one chunk to the next."""

    seen: int
    recent: list[torch.Tensor]
    global_tokens: list[torch.Tensor]


def band_mask(
    query_index: torch.Tensor, key_index: torch.Tensor, window: int, num_global: int
) -> torch.Tensor:
    """Boolean (Lq, Lk) mask, True where query may attend to key.

    ``query_index`` (Lq,) and ``key_index`` (Lk,) are absolute token indices. A key is visible when
    it is not in the future and either within ``window`` tokens back or one of the first
    ``num_global`` tokens.
    """
    delta = query_index[:, None] - key_index[None, :]
    is_global = (key_index < num_global)[None, :]
    return (delta >= 0) & ((delta <= window) | is_global)


class _SlidingBlock(PreNormAttentionBlock):
    """Pre-norm transformer block whose attention reads ``[globals, recent, x]`` under a mask."""

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        allowed: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, L, D), ``context`` (B, K, D) ending with ``x``, ``allowed`` (L, K) bool ->
        (B, L, D) and, with ``need_weights``, the head-averaged weights (B, L, K)."""
        q, k, v = self.project(x, context)
        attn, weights = masked_attention(q, k, v, allowed, need_weights)
        return self.finish(x, attn), weights


class SlidingWindowContext(ContextEncoder):
    """Causal local attention with a window of ``config.memory_tokens`` and optional globals."""

    kind = "sliding_window"

    def __init__(self, config: ContextEncoderConfig, num_global: int = 0) -> None:
        super().__init__()
        if num_global < 0:
            raise ValueError(f"num_global={num_global} must be >= 0")
        self.window = config.memory_tokens
        self.num_global = num_global
        self.blocks = nn.ModuleList(
            _SlidingBlock(config.dim, config.num_heads, config.mlp_ratio)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> SlidingWindowState:
        dim = self.norm.normalized_shape[0]

        def empty() -> list[torch.Tensor]:
            return [
                torch.zeros(batch_size, 0, dim, device=device, dtype=dtype) for _ in self.blocks
            ]

        return SlidingWindowState(seen=0, recent=empty(), global_tokens=empty())

    def run_chunk(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: SlidingWindowState,
        need_weights: bool,
    ) -> tuple[torch.Tensor, SlidingWindowState, torch.Tensor | None]:
        """Weights: the last layer's (B, L, K) over ``[globals, recent, chunk]``."""
        device = tokens.device
        length = tokens.shape[1]
        seen = state.seen
        num_recent = state.recent[0].shape[1] if state.recent else 0
        num_glob = state.global_tokens[0].shape[1] if state.global_tokens else 0
        # Global tokens already in the recent window are read from there; the global part only
        # supplies those that have left it (avoids counting a key twice).
        first_recent = seen - num_recent
        keep_glob = min(num_glob, first_recent)
        query_index = torch.arange(seen, seen + length, device=device)
        key_index = torch.cat(
            [
                torch.arange(keep_glob, device=device),
                torch.arange(first_recent, seen + length, device=device),
            ]
        )
        allowed = band_mask(query_index, key_index, self.window, self.num_global)

        x = tokens
        new_recent, new_global = [], []
        weights = None
        last = len(self.blocks) - 1
        for index, (block, recent, glob) in enumerate(
            zip(self.blocks, state.recent, state.global_tokens, strict=True)
        ):
            local = torch.cat([recent, x], dim=1)
            new_recent.append(local[:, -self.window :] if self.window else local[:, :0])
            new_global.append(torch.cat([glob, x], dim=1)[:, : self.num_global])
            context = torch.cat([glob[:, :keep_glob], local], dim=1)
            x, weights = block(x, context, allowed, need_weights and index == last)
        next_state = SlidingWindowState(
            seen=seen + length, recent=new_recent, global_tokens=new_global
        )
        return self.norm(x), next_state, weights
