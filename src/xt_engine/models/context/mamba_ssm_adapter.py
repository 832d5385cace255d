"""The one door to the optional ``mamba-ssm`` package (its fused CUDA selective scan).

This is the only module of the project that imports ``mamba_ssm``, only through its top-level
exports, and only lazily inside functions, so the engine imports and runs without it (the
pure-PyTorch scan in :mod:`.selective_scan` is the fallback and the reference).

mamba-ssm's ``selective_scan_fn`` always starts from a zero state. A streaming context encoder
carries the state between chunks, so :func:`selective_scan_cuda` adds the initial state's part in
PyTorch. The scan is linear in its state: starting from ``h0`` adds
``exp(L_t) * h0`` to every state ``h_t``, with ``L_t = sum_{k<=t} delta_k * A`` (per channel
and state index), hence ``sum_n C[n, t] * exp(L_t[n]) * h0[n]`` to ``y_t`` before the
``silu(z)`` gate. The kernel is therefore run without ``z`` and the gate is applied here.

Shapes are those of :mod:`.selective_scan`: ``u``, ``delta``, ``z`` (batch, d_inner, L); ``A``
(d_inner, d_state); ``B``, ``C`` (batch, d_state, L); ``D``, ``delta_bias`` (d_inner,); states
(batch, d_inner, d_state).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from xt_engine.errors import ConfigError

__all__ = ["mamba_ssm_available", "selective_scan_cuda"]

INSTALL_HINT = "pip install 'napari-xt[gpu]' (mamba-ssm needs an NVIDIA GPU with CUDA)"


def _load_selective_scan_fn() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """mamba-ssm's ``selective_scan_fn``; ConfigError with the install hint if it is missing.

    Typed as called here, with ``return_last_state=True``: it returns ``(y, last_state)``.
    """
    try:
        from mamba_ssm import selective_scan_fn
    except Exception as err:  # ImportError, or OSError/RuntimeError from a broken CUDA build
        raise ConfigError(
            f"the mamba-ssm CUDA selective scan was requested but cannot be imported ({err})",
            INSTALL_HINT,
        ) from err
    return selective_scan_fn


@functools.lru_cache(maxsize=1)
def mamba_ssm_available() -> bool:
    """True only when ``mamba_ssm`` imports *and* CUDA is available (checked once, cached)."""
    if not torch.cuda.is_available():
        return False
    try:
        _load_selective_scan_fn()
    except ConfigError:
        return False
    return True


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def selective_scan_cuda(
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
    """The selective scan on mamba-ssm's fused kernel, from an explicit initial state.

    Same arguments and results as :func:`.selective_scan.selective_scan_reference`: ``y``
    (batch, d_inner, L) in ``u``'s dtype and ``last_state`` (batch, d_inner, d_state) float32.
    Raises ConfigError (with the install hint) when mamba-ssm cannot be imported.

    mamba-ssm's backward ignores the gradient of the last state it returns, so when autograd is
    recording, ``last_state`` is recomputed here in PyTorch (one reverse cumulative sum), which
    lets gradients flow through a state carried into the next chunk.
    """
    selective_scan_fn = _load_selective_scan_fn()
    training = _needs_grad(u, delta, A, B, C, D, delta_bias, initial_state)
    y, kernel_state = selective_scan_fn(
        u.contiguous(),
        delta.contiguous(),
        A.contiguous(),
        B.contiguous(),
        C.contiguous(),
        D=None if D is None else D.contiguous(),
        z=None,
        delta_bias=None if delta_bias is None else delta_bias.contiguous(),
        delta_softplus=delta_softplus,
        return_last_state=True,
    )
    y = y.float()  # (batch, d_inner, L): C . h_t + D * u from a zero state, not gated

    need_steps = initial_state is not None or training
    if need_steps:
        step = delta.float()
        if delta_bias is not None:
            step = step + delta_bias.float()[:, None]
        if delta_softplus:
            step = F.softplus(step)
        log_decay = step[..., None] * A.float()[None, :, None, :]  # (batch, d_inner, L, d_state)

    if training:
        # last_state = sum_s exp(L_end - L_s) * delta_s * B_s * u_s, where
        # L_end - L_s = sum_{k>s} log_decay_k, an exclusive reverse cumulative sum (summed
        # directly rather than as a difference, so without cancellation).
        from_s = log_decay.flip(2).cumsum(dim=2).flip(2)  # sum_{k>=s}
        after = torch.cat([from_s[:, :, 1:], torch.zeros_like(from_s[:, :, :1])], dim=2)
        drive = (step * u.float())[..., None] * B.float().transpose(1, 2)[:, None]
        last_state = (torch.exp(after) * drive).sum(dim=2)  # (batch, d_inner, d_state)
    else:
        last_state = kernel_state.float()

    if initial_state is not None:
        h0 = initial_state.float()  # (batch, d_inner, d_state)
        decay = torch.exp(log_decay.cumsum(dim=2))  # exp(L_t), (batch, d_inner, L, d_state)
        y = y + torch.einsum("bdln,bdn,bnl->bdl", decay, h0, C.float())
        last_state = last_state + decay[:, :, -1] * h0
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype), last_state
