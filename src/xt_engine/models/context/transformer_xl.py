"""``transformer_xl``: segment-level recurrence with memory carried from chunk to chunk.

Each layer keeps the last ``memory_tokens`` hidden states it saw as its input (its memory). A
chunk's queries attend causally to ``[memory, chunk]``; after the chunk, the memory is updated
with the chunk's hidden states and truncated to the last ``memory_tokens``. With a memory at
least as long as the sequence, running in chunks equals running the whole sequence at once.

The layer layout follows the released xT decoder (so its checkpoints import 1:1): RMSNorm
``input_layernorm`` -> ``attn.qkv`` / ``attn.proj`` -> RMSNorm ``post_attention_layernorm`` ->
gated MLP ``mlp.gate_proj`` / ``mlp.up_proj`` / ``mlp.down_proj`` (SiLU gate).

State: a list with one tensor (B, M, D) per layer, M <= memory_tokens (empty before the first chunk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import ContextEncoderConfig
from xt_engine.models.context.base import ContextEncoder, masked_attention


class CausalMemoryAttention(nn.Module):
    """Multi-head attention of ``x`` over ``[memory, x]``, causal in absolute token order."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, L, D) normalised, ``memory`` (B, M, D) normalised -> (B, L, D), and with
        ``need_weights`` the head-averaged attention (B, L, M + L)."""
        b, length, dim = x.shape
        heads = self.num_heads
        mem = memory.shape[1]
        qkv = self.qkv(torch.cat([memory, x], dim=1)).view(b, mem + length, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, M + L, Dh)
        q = q[:, :, mem:]
        # query i (at absolute offset mem + i) sees keys j <= mem + i
        allowed = torch.ones(length, mem + length, dtype=torch.bool, device=x.device).tril(mem)
        out, weights = masked_attention(q, k, v, allowed, need_weights)
        return self.proj(out.transpose(1, 2).reshape(b, length, dim)), weights


class GatedMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class XLBlock(nn.Module):
    """Pre-norm block; its memory is the block's *input* hidden states of earlier chunks."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(dim, eps=1e-6)
        self.attn = CausalMemoryAttention(dim, num_heads)
        self.post_attention_layernorm = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = GatedMLP(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(
            self.input_layernorm(x), self.input_layernorm(memory), need_weights
        )
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), weights


class TransformerXL(ContextEncoder):
    kind = "transformer_xl"
    exports_attention = True

    def __init__(self, config: ContextEncoderConfig) -> None:
        super().__init__()
        self.memory_tokens = config.memory_tokens
        self.layers = nn.ModuleList(
            XLBlock(config.dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.dim = config.dim
        self.norm = nn.LayerNorm(config.dim) if config.final_norm else nn.Identity()

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> list[torch.Tensor]:
        return [
            torch.zeros(batch_size, 0, self.dim, device=device, dtype=dtype) for _ in self.layers
        ]

    def run_chunk(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: list[torch.Tensor],
        need_weights: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """Weights: the last layer's head-averaged softmax attention (B, L, M + L) over
        ``[memory, chunk]``."""
        x = tokens
        new_state = []
        weights = None
        for index, (layer, memory) in enumerate(zip(self.layers, state, strict=True)):
            if self.memory_tokens:
                new_state.append(torch.cat([memory, x], dim=1)[:, -self.memory_tokens :])
            else:
                new_state.append(memory[:, :0])
            last = index == len(self.layers) - 1
            x, weights = layer(x, memory, need_weights and last)
        return self.norm(x), new_state, weights
