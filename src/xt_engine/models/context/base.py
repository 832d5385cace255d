"""The streaming interface every context encoder implements.

A context encoder relates the tokens of all regions of an image. Tokens arrive chunk by chunk in
raster order of regions; whatever a kind remembers between chunks (Transformer-XL memory, a
Mamba state) is an explicit state value that the caller passes back in, never stored on the
module. For causal kinds, running a sequence in chunks with carried state equals running it
whole (tested per kind).

Shapes: ``tokens`` (B, L, D) float; ``positions`` (L, 2) long, the global (row, col) of each token
in the image's token grid; the state is kind-specific and opaque to callers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ContextState = Any


class ContextEncoder(nn.Module):
    """Base class: subclasses implement :meth:`init_state` and :meth:`run_chunk`."""

    kind: str = "base"
    # capabilities the runtime reads (never isinstance checks): ``passes`` is "causal" (one
    # pass in raster order, state carried) or "two_pass" (a backward pass first, see
    # xt_engine.runtime.passes); ``stateless`` kinds carry nothing between chunks.
    passes: str = "causal"
    stateless: bool = False

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ContextState:
        """The state before the first chunk of an image."""
        return None

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, state: ContextState
    ) -> tuple[torch.Tensor, ContextState]:
        """``tokens`` (B, L, D), ``positions`` (L, 2) -> contextualised (B, L, D), next state.
        ``state=None`` starts a new image."""
        out, state, _ = self.run_chunk(tokens, positions, self._state(tokens, state), False)
        return out, state

    def forward_with_attention(
        self, tokens: torch.Tensor, positions: torch.Tensor, state: ContextState
    ) -> tuple[torch.Tensor, ContextState, torch.Tensor | None]:
        """Like :meth:`forward`, plus the last layer's attention (B, L, K) over the K keys the
        chunk saw (memory first, then the chunk) for kinds with an attention matrix; ``None``
        for kinds without (the model then exports a documented proxy)."""
        return self.run_chunk(tokens, positions, self._state(tokens, state), True)

    def run_chunk(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: ContextState,
        need_weights: bool,
    ) -> tuple[torch.Tensor, ContextState, torch.Tensor | None]:
        """One chunk with a state that is never None: -> (tokens, next state, weights | None);
        weights are only formed when ``need_weights``."""
        raise NotImplementedError

    def _state(self, tokens: torch.Tensor, state: ContextState) -> ContextState:
        if state is None:
            return self.init_state(tokens.shape[0], tokens.device, tokens.dtype)
        return state


class PreNormAttentionBlock(nn.Module):
    """Pre-norm transformer block pieces shared by the kinds whose queries read a longer key
    sequence (memory, window, globals): LayerNorm ``norm1`` -> ``q`` / ``kv`` -> attention ->
    ``proj`` + residual -> LayerNorm ``norm2`` -> GELU ``mlp`` + residual. Subclasses choose
    the keys and the attention (mask, approximation)."""

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

    def project(
        self, x: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` (B, L, D), ``context`` (B, K, D) -> q (B, H, L, Dh), k and v (B, H, K, Dh)."""
        b, length, dim = x.shape
        heads = self.num_heads
        q = self.q(self.norm1(x)).view(b, length, heads, dim // heads).transpose(1, 2)
        k, v = (
            self.kv(self.norm1(context))
            .view(b, context.shape[1], 2, heads, dim // heads)
            .permute(2, 0, 3, 1, 4)
        )
        return q, k, v

    def finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual attention output ``attn`` (B, H, L, Dh) and the MLP: -> (B, L, D)."""
        x = x + self.proj(attn.transpose(1, 2).reshape(x.shape))
        return x + self.mlp(self.norm2(x))


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    need_weights: bool,
    bias: torch.Tensor | None = None,
    bias_is_masked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head attention under a boolean mask, with an optional additive score bias.

    ``q`` (B, H, L, Dh), ``k``/``v`` (B, H, K, Dh), ``allowed`` (L, K), ``bias`` (H, L, K) (with
    ``bias_is_masked`` it already holds ``-inf`` wherever ``allowed`` is False) ->
    output (B, H, L, Dh), and with ``need_weights`` the softmax weights averaged over heads
    (B, L, K); without, the fused ``scaled_dot_product_attention`` kernel runs and no weights
    are formed (the explicit path is its reference; tested equal).
    """
    mask: torch.Tensor = allowed
    if bias is not None:
        mask = bias.to(q.dtype)
        if not bias_is_masked:
            mask = mask.masked_fill(~allowed, float("-inf"))
    if not need_weights:
        # a float mask of 3 dims sends CPU SDPA to its math path (torch 2.14: ~3.7x slower
        # than the flash kernel at L=256, K=1280); with a batch dim it takes the flash kernel
        fused = mask.unsqueeze(0) if mask.dim() == 3 else mask
        return F.scaled_dot_product_attention(q, k, v, attn_mask=fused), None
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if bias is None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    else:
        scores = scores + mask
    probs = scores.softmax(dim=-1)
    return probs @ v, probs.mean(dim=1)


def sincos_position_embedding(
    positions: torch.Tensor, dim: int, order: str = "row_col"
) -> torch.Tensor:
    """2-D sin-cos embedding: ``positions`` (L, 2) of (row, col) -> (L, dim), dim % 4 == 0.

    With ``order="row_col"`` the first half of the channels encode the row, the second half
    the column; ``"col_row"`` swaps the halves (MAE's ``get_2d_sincos_pos_embed``, used by xT:
    its meshgrid puts the column first). Each half is ``[sin(p * w_k), cos(p * w_k)]`` with
    ``w_k = 10000 ** (-k / (dim / 4))``, k = 0 .. dim/4 - 1.
    """
    if dim % 4:
        raise ValueError(f"dim={dim} must be a multiple of 4")
    if order not in ("row_col", "col_row"):
        raise ValueError(f"order={order!r} is not 'row_col' or 'col_row'")
    quarter = dim // 4
    omega = torch.exp(
        -math.log(10000.0)
        * torch.arange(quarter, device=positions.device, dtype=torch.float32)
        / quarter
    )
    parts = []
    for axis in (0, 1) if order == "row_col" else (1, 0):
        angles = positions[:, axis].to(torch.float32)[:, None] * omega[None, :]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1)
