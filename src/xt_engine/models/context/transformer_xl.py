"""``transformer_xl``: segment-level recurrence with memory carried from chunk to chunk.

Each layer keeps the last ``memory_tokens`` hidden states it saw as its input (its memory). A
chunk's queries attend causally to ``[memory, chunk]``; after the chunk, the memory is updated
with the chunk's hidden states and truncated to the last ``memory_tokens``. With a memory at
least as long as the sequence, running in chunks equals running the whole sequence at once.

The layer layout follows the released xT decoder (so its checkpoints import 1:1): RMSNorm
``input_layernorm`` -> ``attn.qkv`` / ``attn.proj`` -> RMSNorm ``post_attention_layernorm`` ->
gated MLP ``mlp.gate_proj`` / ``mlp.up_proj`` / ``mlp.down_proj``:
``down(act(gate(x)) * up(x))``. ``config.mlp_activation`` picks ``act`` (``silu``, this project's
models; ``gelu``, exact erf GELU, xT's ``LlamaMLP``) and ``config.norm_eps`` the RMSNorm eps
(xT's ``LlamaRMSNorm``: 1e-5). Attention: ``qkv`` with bias, split (3, heads, head_dim), scale
``head_dim ** -0.5``, causal (xT's HyperAttention is this exact attention up to 4096 keys).

With ``distance_bias`` every score gets ``-slope * distance`` between the query's and the key's
(row, col) in the image's token grid, a learned slope per head and layer (2-D ALiBi); the memory
then carries its tokens' positions too. With ``relative_range`` K > 0 every score also gets a
learned bias per head and layer indexed by the query-minus-key (row, col) offset, clipped to
[-K, K] (offsets beyond share the edge entries; zero at initialisation, scaled by
:data:`RELATIVE_BIAS_GAIN` so that it learns at the pace of the rest): "what lies exactly k
tokens above".

State: :class:`XLState`, one tensor (B, M, D) per layer and the (M, 2) positions of those tokens,
M <= memory_tokens (empty before the first chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import ContextEncoderConfig
from xt_engine.models.context.base import ContextEncoder, masked_attention


@dataclass
class XLState:
    """Per layer, the memory (B, M, D) of its inputs; ``positions`` (M, 2) of those tokens."""

    memory: list[torch.Tensor]
    positions: torch.Tensor


# The relative bias table is scaled by this gain: Adam moves a parameter by ~lr a step, so an
# unscaled zero-initialised table needs thousands of steps before one offset stands out of the
# 256+ keys (a logit gap of ~log 256 = 5.5); the gain is that many times faster.
RELATIVE_BIAS_GAIN = 8.0


def initial_slopes(num_heads: int) -> torch.Tensor:
    """(H,) distance slopes from 1/2 to 1/128 per token (geometric): local to global heads."""
    if num_heads == 1:
        return torch.tensor([1 / 8])
    return torch.logspace(-1, -7, num_heads, base=2.0)


@dataclass
class ChunkKeys:
    """What every layer's attention reads about one chunk's queries and keys, formed once per
    chunk (L queries, K = M + L keys: the memory, then the chunk).

    ``allowed`` (L, K) bool: query i (at absolute offset M + i) sees keys j <= M + i;
    ``blocked`` (L, K) float: 0 where allowed, ``-inf`` elsewhere (added to a score bias).
    ``distance`` (L, K) float or None: the token-grid distance.
    ``relative_index`` (L, K) int32 or None: the query-minus-key (row, col) offset clipped to
    [-K, K], as a flat index into a (2K + 1) x (2K + 1) table.
    """

    allowed: torch.Tensor
    blocked: torch.Tensor
    distance: torch.Tensor | None = None
    relative_index: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
        distance_bias: bool = False,
        relative_range: int = 0,
    ) -> ChunkKeys:
        """``query_positions`` (L, 2), ``key_positions`` (K, 2) long (the queries are the last
        L keys)."""
        length, keys = query_positions.shape[0], key_positions.shape[0]
        device = query_positions.device
        allowed = torch.ones(length, keys, dtype=torch.bool, device=device).tril(keys - length)
        blocked = torch.full((length, keys), float("-inf"), device=device)
        blocked = blocked.triu(keys - length + 1)
        distance = relative_index = None
        if distance_bias or relative_range:
            # int32 offsets: half the memory traffic of int64 on these (L, K) tensors
            qy, qx = query_positions.to(torch.int32).unbind(-1)
            ky, kx = key_positions.to(torch.int32).unbind(-1)
            dy, dx = qy[:, None] - ky[None, :], qx[:, None] - kx[None, :]
            if distance_bias:
                distance = torch.hypot(dy.float(), dx.float())
            if relative_range:
                reach = relative_range  # offsets beyond share the edge entries
                row, col = dy.clamp(-reach, reach) + reach, dx.clamp(-reach, reach) + reach
                relative_index = row * (2 * reach + 1) + col
        return cls(allowed, blocked, distance, relative_index)


class CausalMemoryAttention(nn.Module):
    """Multi-head attention of ``x`` over ``[memory, x]``, causal in absolute token order."""

    def __init__(
        self, dim: int, num_heads: int, distance_bias: bool = False, relative_range: int = 0
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.log_slopes = nn.Parameter(initial_slopes(num_heads).log()) if distance_bias else None
        self.relative_range = relative_range
        side = 2 * relative_range + 1
        self.relative_bias = (
            nn.Parameter(torch.zeros(num_heads, side, side)) if relative_range else None
        )

    def score_bias(self, keys: ChunkKeys) -> torch.Tensor | None:
        """(H, L, K) additive score bias, ``-inf`` where a key is not allowed; None without
        biases. Distance: ``-slope * distance``, a slope per head; relative: the table entry of
        each clipped offset times :data:`RELATIVE_BIAS_GAIN`."""
        bias = None
        if self.log_slopes is not None and keys.distance is not None:
            bias = -self.log_slopes.exp()[:, None, None] * keys.distance[None]
        if self.relative_bias is not None and keys.relative_index is not None:
            heads = self.num_heads
            table = (RELATIVE_BIAS_GAIN * self.relative_bias).view(heads, -1)
            gathered = table.index_select(1, keys.relative_index.flatten())
            gathered = gathered.view(heads, *keys.relative_index.shape)
            bias = gathered if bias is None else bias.add_(gathered)
        # in place (each tensor here is fresh); adding -inf masks like masked_fill, ~5x faster
        return None if bias is None else bias.add_(keys.blocked)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        need_weights: bool = False,
        keys: ChunkKeys | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, L, D) normalised, ``memory`` (B, M, D) normalised, ``keys`` the chunk's
        :class:`ChunkKeys` (default: causal mask only) -> (B, L, D), and with ``need_weights``
        the head-averaged attention (B, L, M + L)."""
        b, length, dim = x.shape
        heads = self.num_heads
        mem = memory.shape[1]
        if keys is None:
            keys = ChunkKeys.build(x.new_zeros(length, 2), x.new_zeros(mem + length, 2))
        qkv = self.qkv(torch.cat([memory, x], dim=1)).view(b, mem + length, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, M + L, Dh)
        q = q[:, :, mem:]
        bias = self.score_bias(keys)
        out, weights = masked_attention(
            q, k, v, keys.allowed, need_weights, bias, bias_is_masked=True
        )
        return self.proj(out.transpose(1, 2).reshape(b, length, dim)), weights


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"silu": F.silu, "gelu": F.gelu}


class GatedMLP(nn.Module):
    """``x`` (..., dim) -> ``down(act(gate(x)) * up(x))`` (..., dim); ``act`` silu or gelu."""

    def __init__(self, dim: int, hidden: int, activation: str = "silu") -> None:
        super().__init__()
        self.act = _ACTIVATIONS[activation]
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class XLBlock(nn.Module):
    """Pre-norm block; its memory is the block's *input* hidden states of earlier chunks."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        distance_bias: bool = False,
        norm_eps: float = 1e-6,
        mlp_activation: str = "silu",
        relative_range: int = 0,
    ) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(dim, eps=norm_eps)
        self.attn = CausalMemoryAttention(dim, num_heads, distance_bias, relative_range)
        self.post_attention_layernorm = nn.RMSNorm(dim, eps=norm_eps)
        self.mlp = GatedMLP(dim, int(dim * mlp_ratio), mlp_activation)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        need_weights: bool = False,
        keys: ChunkKeys | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(
            self.input_layernorm(x), self.input_layernorm(memory), need_weights, keys
        )
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), weights


class TransformerXL(ContextEncoder):
    kind = "transformer_xl"
    exports_attention = True

    def __init__(self, config: ContextEncoderConfig) -> None:
        super().__init__()
        self.memory_tokens = config.memory_tokens
        self.distance_bias = bool(config.distance_bias)  # resolved by the config (never None)
        self.relative_range = int(config.relative_range or 0)
        self.layers = nn.ModuleList(
            XLBlock(
                config.dim,
                config.num_heads,
                config.mlp_ratio,
                self.distance_bias,
                config.norm_eps,
                config.mlp_activation,
                self.relative_range,
            )
            for _ in range(config.depth)
        )
        self.dim = config.dim
        self.norm = nn.LayerNorm(config.dim) if config.final_norm else nn.Identity()

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> XLState:
        return XLState(
            [torch.zeros(batch_size, 0, self.dim, device=device, dtype=dtype) for _ in self.layers],
            torch.zeros(0, 2, dtype=torch.long, device=device),
        )

    def run_chunk(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: XLState,
        need_weights: bool,
    ) -> tuple[torch.Tensor, XLState, torch.Tensor | None]:
        """Weights: the last layer's head-averaged softmax attention (B, L, M + L) over
        ``[memory, chunk]``."""
        x = tokens
        keep = self.memory_tokens
        query_positions = positions.to(state.positions.device)
        key_positions = torch.cat([state.positions, query_positions])
        # masks, distances and offsets once per chunk; each layer reads them with its own
        # slopes and table
        keys = ChunkKeys.build(
            query_positions, key_positions, self.distance_bias, self.relative_range
        )
        memories = []
        weights = None
        for index, (layer, memory) in enumerate(zip(self.layers, state.memory, strict=True)):
            memories.append(torch.cat([memory, x], dim=1)[:, -keep:] if keep else memory[:, :0])
            last = index == len(self.layers) - 1
            x, weights = layer(x, memory, need_weights and last, keys)
        next_positions = key_positions[-keep:] if keep else key_positions[:0]
        return self.norm(x), XLState(memories, next_positions), weights
