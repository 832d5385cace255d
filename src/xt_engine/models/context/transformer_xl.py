"""``transformer_xl``: segment-level recurrence with memory carried from chunk to chunk.

Each layer keeps the last ``memory_tokens`` hidden states it saw as its input (its memory). A
chunk's queries attend causally to ``[memory, chunk]``; after the chunk, the memory is updated
with the chunk's hidden states and truncated to the last ``memory_tokens``. With a memory at
least as long as the sequence, running in chunks equals running the whole sequence at once.

State: a list with one tensor (B, M, D) per layer, M <= memory_tokens (empty before the first chunk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import ContextEncoderConfig
from xt_engine.models.context.base import ContextEncoder


class _XLBlock(nn.Module):
    """Pre-norm transformer block whose attention reads ``[memory, x]`` as keys/values."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, D), ``memory`` (B, M, D) -> (B, L, D)."""
        b, length, dim = x.shape
        heads = self.num_heads
        context = torch.cat([memory, x], dim=1)  # (B, M + L, D)
        q = self.q(self.norm1(x)).view(b, length, heads, dim // heads).transpose(1, 2)
        k, v = (
            self.kv(self.norm1(context))
            .view(b, context.shape[1], 2, heads, dim // heads)
            .permute(2, 0, 3, 1, 4)
        )
        mem = memory.shape[1]
        # query i (at absolute offset mem + i) sees keys j <= mem + i
        allowed = torch.ones(length, mem + length, dtype=torch.bool, device=x.device).tril(mem)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, length, dim))
        return x + self.mlp(self.norm2(x))


class TransformerXL(ContextEncoder):
    kind = "transformer_xl"

    def __init__(self, config: ContextEncoderConfig) -> None:
        super().__init__()
        self.memory_tokens = config.memory_tokens
        self.blocks = nn.ModuleList(
            _XLBlock(config.dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> list[torch.Tensor]:
        dim = self.norm.normalized_shape[0]
        return [torch.zeros(batch_size, 0, dim, device=device, dtype=dtype) for _ in self.blocks]

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, state: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if state is None:
            state = self.init_state(tokens.shape[0], tokens.device, tokens.dtype)
        x = tokens
        new_state = []
        for block, memory in zip(self.blocks, state, strict=True):
            if self.memory_tokens:
                new_state.append(torch.cat([memory, x], dim=1)[:, -self.memory_tokens :])
            else:
                new_state.append(memory[:, :0])
            x = block(x, memory)
        return self.norm(x), new_state
