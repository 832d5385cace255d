"""Mamba-1 selective scan in pure PyTorch, with an explicit initial state.

The scan is the linear recurrence at the heart of a Mamba block. For every batch element ``b``,
channel ``d`` and state index ``n`` it runs, over time ``t``::

    delta_t = softplus(delta_t + delta_bias)                  (each optional)
    h_t     = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B[b, n, t] * u[b, d, t]
    y_t     = sum_n C[b, n, t] * h_t[n]  +  D[d] * u[b, d, t]
    y_t     = y_t * silu(z[b, d, t])                           (when z is given)

starting from ``h_{-1} = initial_state`` (zeros when omitted).

Shapes (``d_inner`` channels, ``d_state`` state size, ``L`` timesteps):

* ``u``, ``delta``, ``z``: (batch, d_inner, L)
* ``A``: (d_inner, d_state), real; Mamba uses ``A = -exp(A_log)`` so ``A < 0`` (a decay)
* ``B``, ``C``: (batch, d_state, L), input dependent, shared by all channels
* ``D``, ``delta_bias``: (d_inner,)
* ``initial_state`` and the returned ``last_state``: (batch, d_inner, d_state)

Both functions compute in float32 and return ``y`` in ``u``'s dtype and ``last_state`` in float32.
:func:`selective_scan_reference` is the plain sequential loop (the oracle);
:func:`selective_scan_chunked` gives the same results with tensor ops inside chunks of timesteps
and a Python loop only over chunks. Both are differentiable with autograd, including through
``initial_state`` and ``last_state``, so a state carried between calls trains end to end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_chunked", "selective_scan_reference"]


def _effective_delta(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool
) -> torch.Tensor:
    """``delta`` (batch, d_inner, L) -> the step sizes actually used, float32, same shape."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _output(
    y: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Add the skip ``D * u`` to ``y`` (batch, d_inner, L), gate with ``silu(z)``, cast."""
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def _start_state(initial_state: torch.Tensor | None, u: torch.Tensor, d_state: int) -> torch.Tensor:
    """The float32 state (batch, d_inner, d_state) before the first timestep."""
    if initial_state is not None:
        return initial_state.float()
    batch, d_inner, _ = u.shape
    return torch.zeros(batch, d_inner, d_state, device=u.device, dtype=torch.float32)


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan as a sequential loop over time (slow, obviously correct).

    ``u``, ``delta``, ``z`` (batch, d_inner, L); ``A`` (d_inner, d_state); ``B``, ``C``
    (batch, d_state, L); ``D``, ``delta_bias`` (d_inner,); ``initial_state`` (batch, d_inner,
    d_state) or None for zeros. Returns ``y`` (batch, d_inner, L) in ``u``'s dtype and
    ``last_state`` (batch, d_inner, d_state) in float32.
    """
    delta = _effective_delta(delta, delta_bias, delta_softplus)
    A, B, C, uf = A.float(), B.float(), C.float(), u.float()
    h = _start_state(initial_state, u, A.shape[1])  # (batch, d_inner, d_state)
    outputs = []
    for t in range(u.shape[2]):
        step = delta[:, :, t, None]  # (batch, d_inner, 1)
        decay = torch.exp(step * A)  # (batch, d_inner, d_state)
        drive = step * B[:, None, :, t] * uf[:, :, t, None]  # (batch, d_inner, d_state)
        h = decay * h + drive
        outputs.append((h * C[:, None, :, t]).sum(dim=2))  # (batch, d_inner)
    if outputs:
        y = torch.stack(outputs, dim=2)
    else:
        y = uf.new_zeros(uf.shape)
    return _output(y, u, D, z, u.dtype), h


def selective_scan_sequential(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    block: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU fast path: :func:`selective_scan_reference`'s recurrence, with the decays,
    drives and read-outs of ``block`` timesteps computed at once (vectorised) and only the
    ``h = decay * h + drive`` update left in the time loop. Memory: ``4 x batch x d_inner x
    d_state x block`` floats. Same arguments and results as the reference (tested)."""
    delta = _effective_delta(delta, delta_bias, delta_softplus)
    A, B, C, uf = A.float(), B.float(), C.float(), u.float()
    h = _start_state(initial_state, u, A.shape[1])  # (batch, d_inner, d_state)
    length = u.shape[2]
    y = uf.new_zeros(uf.shape)
    for t0 in range(0, length, block):
        t1 = min(t0 + block, length)
        step = delta[:, :, t0:t1].transpose(1, 2)[..., None]  # (batch, T, d_inner, 1)
        decay = torch.exp(step * A)  # (batch, T, d_inner, d_state)
        drive = step * B[:, None, :, t0:t1].permute(0, 3, 1, 2) * uf[:, :, t0:t1].transpose(
            1, 2
        )[..., None]  # (batch, T, d_inner, d_state)
        states = torch.empty_like(decay)
        for t in range(t1 - t0):
            h = decay[:, t] * h + drive[:, t]
            states[:, t] = h
        read = C[:, :, t0:t1].transpose(1, 2)[:, :, None, :]  # (batch, T, 1, d_state)
        y[:, :, t0:t1] = (states * read).sum(dim=3).transpose(1, 2)
    return _output(y, u, D, z, u.dtype), h


def _causal_decay(log_decay: torch.Tensor) -> torch.Tensor:
    """The decay matrix of a chunk: ``log_decay`` (..., T) -> (..., T, T).

    ``log_decay`` holds ``delta_k * A`` per timestep ``k``, with cumulative sum
    ``L_t = sum_{k<=t} log_decay_k``. Entry ``[..., t, s]`` of the result is
    ``exp(L_t - L_s)``, the decay from step ``s`` to step ``t``, for ``s <= t``, and 0 for
    ``s > t`` (no influence of the future): those entries are set to ``-inf`` before ``exp``,
    so only ``L_t - L_s <= 0`` (for ``A <= 0``) is ever exponentiated.

    ``L`` is accumulated and differenced in float64 and only then rounded to float32: in float32,
    ``L_t - L_s`` loses precision to cancellation when ``|L_t|`` is large and ``t - s`` small,
    exactly the terms that weigh most. The in-place ops keep autograd intact (neither
    ``masked_fill_`` nor ``exp_`` needs the values they overwrite).
    """
    steps = log_decay.shape[-1]
    causal = torch.ones(steps, steps, dtype=torch.bool, device=log_decay.device).tril()  # s <= t
    cumulative = log_decay.double().cumsum(dim=-1)
    pairwise = (cumulative[..., :, None] - cumulative[..., None, :]).to(log_decay.dtype)
    return pairwise.masked_fill_(~causal, float("-inf")).exp_()


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan, parallel within chunks of ``chunk_size`` timesteps.

    Same arguments, shapes and results as :func:`selective_scan_reference`. Inside a chunk of
    ``T`` steps that starts from state ``h0``, with ``L_t = sum_{k<=t} delta_k * A`` (the
    cumulative log-decay, ``<= 0`` for ``A <= 0``) and ``x_s = delta_s * B_s * u_s``::

        h_t = exp(L_t) * h0 + sum_{s<=t} exp(L_t - L_s) * x_s

    which is computed for all ``t`` at once from a (batch, d_inner, d_state, T, T) decay matrix;
    entries with ``s > t`` are set to ``-inf`` before ``exp`` so they vanish, and no positive
    number is exponentiated (for ``A <= 0``). Only the chunks are looped over in Python, carrying
    ``h``. Memory per chunk is ``batch * d_inner * d_state * T**2`` floats; work grows with ``T``
    per timestep, so small chunks suit CPUs and larger ones suit GPUs.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    delta = _effective_delta(delta, delta_bias, delta_softplus)  # (batch, d_inner, L)
    A, B, C, uf = A.float(), B.float(), C.float(), u.float()
    h = _start_state(initial_state, u, A.shape[1])  # (batch, d_inner, d_state)
    length = u.shape[2]
    outputs = []
    for start in range(0, length, chunk_size):
        stop = min(start + chunk_size, length)
        step = delta[:, :, start:stop]  # (batch, d_inner, T)
        log_decay = step[:, :, None, :] * A[None, :, :, None]  # (batch, d_inner, d_state, T)
        drive = (step * uf[:, :, start:stop])[:, :, None, :] * B[:, None, :, start:stop]
        decay = _causal_decay(log_decay)  # (batch, d_inner, d_state, T, T)
        states = torch.matmul(decay, drive[..., None]).squeeze(-1)  # (batch, d_inner, d_state, T)
        states = states + torch.exp(log_decay.cumsum(dim=-1)) * h[..., None]
        outputs.append((states * C[:, None, :, start:stop]).sum(dim=2))  # (batch, d_inner, T)
        h = states[..., -1]
    if outputs:
        y = torch.cat(outputs, dim=2)
    else:
        y = uf.new_zeros(uf.shape)
    return _output(y, u, D, z, u.dtype), h


def implicit_attention(
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    channel_block: int = 8,
) -> torch.Tensor:
    """Mamba's implicit attention within one chunk, averaged over channels.

    The scan's output is ``y_t = sum_{s <= t} alpha_{t,s} u_s + D u_t`` with, per channel d,
    ``alpha_{t,s,d} = sum_n C_{t,n} exp(sum_{r=s+1..t} delta_{r,d} A_{d,n}) B_{s,n} delta_{s,d}``.
    Returns ``mean_d |alpha_{t,s,d}|`` as (batch, L, L) (zero above the diagonal). ``delta`` is
    the step size after bias and softplus, (batch, d_inner, L); ``A`` (d_inner, d_state);
    ``B``, ``C`` (batch, d_state, L). The state carried in from earlier chunks is not included.
    Memory: batch x channel_block x L x L x d_state floats at a time.
    """
    batch, d_inner, length = delta.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=delta.device).tril()
    b_s = B.transpose(1, 2)[:, None, None, :, :].float()  # (batch, 1, 1, L_s, n)
    c_t = C.transpose(1, 2)[:, None, :, None, :].float()  # (batch, 1, L_t, 1, n)
    total = torch.zeros(batch, length, length, device=delta.device)
    for d0 in range(0, d_inner, channel_block):
        d_delta = delta[:, d0 : d0 + channel_block].float()  # (batch, c, L)
        log_decay = (d_delta[..., None] * A[d0 : d0 + channel_block, None, :].float()).cumsum(2)
        diff = log_decay[:, :, :, None, :] - log_decay[:, :, None, :, :]  # (batch, c, t, s, n)
        diff = diff.masked_fill(~causal[None, None, :, :, None], float("-inf"))
        alpha = (c_t * diff.exp() * b_s).sum(-1) * d_delta[:, :, None, :]  # (batch, c, t, s)
        total += alpha.abs().sum(dim=1)
    return total / d_inner
