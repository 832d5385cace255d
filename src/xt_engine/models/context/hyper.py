"""``hyper``: near-linear causal attention in the spirit of HyperAttention, with carried memory.

Like ``transformer_xl``, each layer keeps the last ``memory_tokens`` hidden states it saw as its
input, and a chunk's queries attend causally to ``[memory, chunk]``. When the number of keys is at
most ``exact_threshold`` the attention is exact (and running in chunks equals running whole, as
for ``transformer_xl``). Above it, :func:`hyper_attention` estimates the causal softmax attention
in time and memory ``O(N * (block_size + num_samples))`` instead of ``O(N ** 2)``:

* **diagonal**: every query always sees its own key (so no query is left with nothing);
* **blocks**: queries and keys are hashed with sign random projections (angular LSH,
  ``num_hashes`` bits, a fixed seeded matrix kept as a buffer), the bucket codes are ranked in
  Gray-code order so that neighbouring buckets differ by one bit, queries and keys are sorted by
  bucket, and each aligned block of sorted queries attends exactly to the matching block of sorted
  keys (the heavy entries of the attention matrix, if queries and keys cluster) and, with
  ``look_back`` (the default), to the block before it, so that a bucket cut by a block boundary
  is still seen whole by the queries after the cut (keys within a bucket are in causal order);
* **samples**: ``num_samples`` key columns drawn uniformly without replacement estimate the rest
  of the softmax normaliser and output; each sampled term is weighted by
  ``num_keys / num_samples``, and entries already covered by the diagonal or the query's block are
  masked out so nothing is counted twice. The columns come from a CPU ``torch.Generator`` seeded
  by :func:`sample_seed` from (``hyper_seed``, layer, absolute index of the chunk's first token),
  never from the global RNG: the same input, run in the same chunks, gives the same output.

Each part yields a normalised partial output and its log-sum-exp; they are combined through a
shared log-sum-exp into one normalised softmax estimate. Causality is respected in every part:
a key is used only if its absolute index does not exceed the query's.

All settings come from :class:`~xt_engine.config.ContextEncoderConfig` (``memory_tokens``,
``hyper_exact_threshold``, ``hyper_block_size``, ``hyper_num_samples``, ``hyper_num_hashes``,
``hyper_seed``). Which path a layer takes depends on memory + chunk length, and the chunks are cut
from ``chunk_regions`` alone, so for a given config and image the choice is fixed.

State: :class:`HyperState`, one tensor (B, M, D) per layer, M <= memory_tokens (empty before the
first chunk), and ``seen``, the number of tokens run so far.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import ContextEncoderConfig
from xt_engine.models.context.base import (
    ContextEncoder,
    PreNormAttentionBlock,
    masked_attention,
)


@dataclass
class HyperState:
    """Per layer, the memory (B, M, D) of its inputs; ``seen``: the tokens run before the next
    chunk, i.e. the absolute index of its first token (it seeds that chunk's samples)."""

    memory: list[torch.Tensor]
    seen: int = 0


def sample_seed(seed: int, layer: int, first_token: int) -> int:
    """Seed of the sample generator of one call: a 63-bit hash of ``(seed, layer, first_token)``
    (``first_token``: absolute index of the call's first query), the same on every run and
    machine, and different for every layer and chunk start."""
    text = f"hyper:{seed}:{layer}:{first_token}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def block_layout(num_queries: int, num_keys: int, block_size: int) -> tuple[int, int, int]:
    """``(num_blocks, query_block, key_block)`` for the block part of :func:`hyper_attention`.

    Sorted queries are cut into ``num_blocks = ceil(num_queries / block_size)`` blocks of
    ``query_block <= block_size`` rows; sorted keys into as many blocks of ``key_block`` columns,
    so that block ``b`` of the queries and block ``b`` of the keys cover the same share of the
    bucket order. The score tensor of the block part has ``num_blocks * query_block * key_block``
    entries per (batch, head) (twice that with look-back), about ``num_keys * block_size``: linear
    in the sequence length, where exact attention needs ``num_queries * num_keys``.
    """
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1")
    num_blocks = max(1, math.ceil(num_queries / block_size))
    query_block = max(1, math.ceil(num_queries / num_blocks))
    key_block = max(1, math.ceil(num_keys / num_blocks))
    return num_blocks, query_block, key_block


def lsh_rank(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """Bucket of each row of ``x`` (..., N, d) under ``projection`` (d, bits) -> (..., N) long.

    The bucket is the sign pattern of ``x @ projection``, read as a Gray code and returned as its
    rank, so buckets with adjacent ranks differ in one hyperplane.
    """
    bits = projection.shape[1]
    signs = (x.detach() @ projection.to(x.dtype)) > 0  # (..., N, bits)
    weights = 2 ** torch.arange(bits, device=x.device, dtype=torch.long)
    code = (signs.long() * weights).sum(-1)
    rank = code.clone()
    shift = 1
    while shift < bits:  # inverse Gray code: rank ^ (rank >> 1) == code
        rank = rank ^ (rank >> shift)
        shift *= 2
    return rank


def _masked_part(
    scores: torch.Tensor, mask: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention restricted to ``mask``: ``scores`` (..., Q, K), ``mask`` broadcastable
    to it, ``values`` (..., K, d) -> (output (..., Q, d), log-sum-exp (..., Q)).

    Rows with no allowed key give output 0 and log-sum-exp ``-inf``, with finite gradients.
    """
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, float("-inf"))
    any_key = mask.any(-1)
    peak = torch.where(any_key, filled.amax(-1), torch.zeros_like(filled[..., 0])).detach()
    weights = torch.exp(filled - peak[..., None])  # 0 on masked entries
    total = weights.sum(-1)
    total = torch.where(any_key, total, torch.ones_like(total))
    out = (weights @ values) / total[..., None]
    lse = torch.where(any_key, peak + torch.log(total), torch.full_like(total, float("-inf")))
    return out, lse


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` (B, H, N, d), ``index`` (B, H, R) long -> (B, H, R, d)."""
    return x.gather(2, index[..., None].expand(-1, -1, -1, x.shape[-1]))


def hyper_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    query_offset: int,
    projection: torch.Tensor,
    block_size: int = 256,
    num_samples: int = 256,
    generator: torch.Generator | None = None,
    look_back: bool = True,
) -> torch.Tensor:
    """Approximate causal softmax attention.

    Args:
        q: (B, H, Lq, d) queries; query ``i`` has absolute index ``query_offset + i``.
        k: (B, H, Nk, d) keys; key ``j`` has absolute index ``j``, so query ``i``'s own key is
            key ``query_offset + i`` (``query_offset + Lq <= Nk``).
        v: (B, H, Nk, dv) values (``dv`` may differ from ``d``: with ``v`` the identity, the
            output rows are the estimated attention rows).
        query_offset: absolute index of the first query (the number of memory keys before it).
        projection: (d, bits) LSH hyperplanes.
        block_size: queries per block of the sorted order.
        num_samples: uniformly sampled key columns (capped at Nk).
        generator: CPU generator for the sampled columns (drawn on the CPU, then moved to
            ``q.device``); None: a fresh one seeded with 0. The global RNG is never used.
        look_back: each query block also attends to the previous block of sorted keys.

    Returns:
        (B, H, Lq, dv): ``softmax(q k^T / sqrt(d) + causal mask) v``, estimated.
    """
    b, h, lq, d = q.shape
    nk, dv = k.shape[2], v.shape[-1]
    if query_offset + lq > nk:
        raise ValueError(f"query_offset={query_offset} + {lq} queries exceed {nk} keys")
    device = q.device
    scale = d**-0.5
    q_abs = torch.arange(query_offset, query_offset + lq, device=device)  # (Lq,)

    # --- diagonal: each query with its own key, weight 1 --------------------------------------
    own = slice(query_offset, query_offset + lq)
    diag_lse = (q * k[:, :, own]).sum(-1) * scale  # (B, H, Lq)
    diag_out = v[:, :, own]  # (B, H, Lq, dv)

    # --- blocks of LSH-sorted queries and keys --------------------------------------------------
    num_blocks, qb, kb = block_layout(lq, nk, block_size)
    q_order = torch.argsort(lsh_rank(q, projection), dim=-1, stable=True)  # (B, H, Lq)
    k_order = torch.argsort(lsh_rank(k, projection), dim=-1, stable=True)  # (B, H, Nk)
    q_pad, k_pad = num_blocks * qb - lq, num_blocks * kb - nk
    q_order_p = F.pad(q_order, (0, q_pad))  # padded rows gather row 0 and are dropped below
    k_order_p = F.pad(k_order, (0, k_pad))
    # absolute indices in sorted order; padded queries get -1 (see nothing), padded keys a value
    # beyond every query (never seen)
    q_idx = F.pad(q_order + query_offset, (0, q_pad), value=-1).view(b, h, num_blocks, qb)
    k_idx = F.pad(k_order, (0, k_pad), value=nk + 1).view(b, h, num_blocks, kb)
    q_sorted = _gather_rows(q, q_order_p).view(b, h, num_blocks, qb, d)
    k_sorted = _gather_rows(k, k_order_p).view(b, h, num_blocks, kb, d)
    v_sorted = _gather_rows(v, k_order_p).view(b, h, num_blocks, kb, dv)
    if look_back:
        # each block of queries also reads the previous block of keys (Reformer-style), so a
        # bucket cut by a block boundary is still seen whole by the queries after the cut
        def with_previous(x: torch.Tensor, fill: float) -> torch.Tensor:
            pad = [0, 0] * (x.dim() - 3) + [1, 0]
            return torch.cat([F.pad(x, pad, value=fill)[:, :, :-1], x], dim=3)

        k_idx = with_previous(k_idx, nk + 1)
        k_sorted = with_previous(k_sorted, 0.0)
        v_sorted = with_previous(v_sorted, 0.0)
    block_scores = (q_sorted @ k_sorted.transpose(-1, -2)) * scale  # (B, H, nb, qb, kb')
    # strictly earlier keys: the future and the diagonal (counted above) are both excluded
    block_mask = k_idx[..., None, :] < q_idx[..., :, None]
    block_out, block_lse = _masked_part(block_scores, block_mask, v_sorted)
    q_inverse = torch.argsort(q_order, dim=-1)  # sorted position of each original query
    block_out = _gather_rows(block_out.reshape(b, h, -1, dv), q_inverse)  # (B, H, Lq, dv)
    block_lse = block_lse.reshape(b, h, -1).gather(2, q_inverse)  # (B, H, Lq)

    # --- uniformly sampled key columns, weighted num_keys / num_samples -------------------------
    s = min(num_samples, nk)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    sample = torch.randperm(nk, generator=generator, device="cpu")[:s].to(device)  # (S,)
    sample_scores = (q @ k[:, :, sample].transpose(-1, -2)) * scale  # (B, H, Lq, S)
    q_block_id = q_inverse // qb  # (B, H, Lq)
    k_block_id = torch.argsort(k_order, dim=-1)[:, :, sample] // kb  # (B, H, S)
    gap = q_block_id[..., :, None] - k_block_id[..., None, :]  # (B, H, Lq, S)
    covered = (gap == 0) | (gap == 1) if look_back else gap == 0
    # (B, H, Lq, S): earlier keys the block part did not already cover
    sample_mask = (sample[None, :] < q_abs[:, None]) & ~covered
    sample_out, sample_lse = _masked_part(sample_scores, sample_mask, v[:, :, sample])
    sample_lse = sample_lse + math.log(nk / s)

    # --- one normaliser for all parts -----------------------------------------------------------
    lses = torch.stack([diag_lse, block_lse, sample_lse])  # (3, B, H, Lq)
    total = torch.logsumexp(lses, dim=0)  # finite: the diagonal is always present
    shares = torch.exp(lses - total)[..., None]  # (3, B, H, Lq, 1)
    return shares[0] * diag_out + shares[1] * block_out + shares[2] * sample_out


class _HyperBlock(PreNormAttentionBlock):
    """Pre-norm transformer block whose attention reads ``[memory, x]``, exact or approximate.

    Layer ``layer`` draws its LSH planes (head_dim, ``hyper_num_hashes``) from
    ``hyper_seed + layer`` (a buffer, so checkpoints carry them) and seeds the samples of each
    call with :func:`sample_seed`.
    """

    lsh_projection: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, config: ContextEncoderConfig, layer: int) -> None:
        super().__init__(config.dim, config.num_heads, config.mlp_ratio)
        self.exact_threshold = config.hyper_exact_threshold
        self.block_size = config.hyper_block_size
        self.num_samples = config.hyper_num_samples
        self.seed = config.hyper_seed
        self.layer = layer
        planes = torch.Generator().manual_seed(config.hyper_seed + layer)
        head_dim = config.dim // config.num_heads
        self.register_buffer(
            "lsh_projection", torch.randn(head_dim, config.hyper_num_hashes, generator=planes)
        )

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, first_token: int, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, L, D) (its first token has absolute index ``first_token``), ``memory``
        (B, M, D) -> (B, L, D), and with ``need_weights`` the head-averaged weights
        (B, L, M + L) on the exact path (None on the approximate one, which never forms the
        full matrix)."""
        length = x.shape[1]
        context = torch.cat([memory, x], dim=1)  # (B, M + L, D)
        q, k, v = self.project(x, context)
        mem = memory.shape[1]
        if context.shape[1] <= self.exact_threshold:
            # query i (at absolute offset mem + i) sees keys j <= mem + i
            allowed = torch.ones(length, mem + length, dtype=torch.bool, device=x.device).tril(mem)
            attn, weights = masked_attention(q, k, v, allowed, need_weights)
        else:
            weights = None
            generator = torch.Generator().manual_seed(
                sample_seed(self.seed, self.layer, first_token)
            )
            attn = hyper_attention(
                q, k, v, mem, self.lsh_projection, self.block_size, self.num_samples, generator
            )
        return self.finish(x, attn), weights


class HyperContext(ContextEncoder):
    """Transformer-XL-style memory with HyperAttention-style attention above a size threshold.

    Every setting comes from ``config``: exact attention while memory + chunk has at most
    ``hyper_exact_threshold`` keys, else :func:`hyper_attention` with ``hyper_block_size``,
    ``hyper_num_samples`` and ``hyper_num_hashes``; ``hyper_seed`` seeds the LSH planes and the
    samples. Both paths are deterministic: the same input in the same chunks gives the same
    output whatever the global RNG. The exact path is chunking-invariant (chunked with memory
    covering the sequence == whole); the approximate one is not (its buckets and samples depend
    on the chunk).
    """

    kind = "hyper"

    def __init__(self, config: ContextEncoderConfig) -> None:
        super().__init__()
        self.memory_tokens = config.memory_tokens
        self.blocks = nn.ModuleList(_HyperBlock(config, layer) for layer in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> HyperState:
        dim = self.norm.normalized_shape[0]
        empty = [torch.zeros(batch_size, 0, dim, device=device, dtype=dtype) for _ in self.blocks]
        return HyperState(empty, 0)

    def run_chunk(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: HyperState,
        need_weights: bool,
    ) -> tuple[torch.Tensor, HyperState, torch.Tensor | None]:
        """Weights over ``[memory, chunk]`` on the exact path; None above
        ``hyper_exact_threshold`` keys (the model then exports its documented proxy)."""
        x = tokens
        memories = []
        weights = None
        last = len(self.blocks) - 1
        for index, (block, memory) in enumerate(zip(self.blocks, state.memory, strict=True)):
            if self.memory_tokens:
                memories.append(torch.cat([memory, x], dim=1)[:, -self.memory_tokens :])
            else:
                memories.append(memory[:, :0])
            x, weights = block(x, memory, state.seen, need_weights and index == last)
        return self.norm(x), HyperState(memories, state.seen + tokens.shape[1]), weights
