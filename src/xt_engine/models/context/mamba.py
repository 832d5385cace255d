"""``mamba``: a stack of Mamba-1 (selective state space) blocks, streamed chunk by chunk.

Each of ``depth`` residual blocks computes ``x + mixer(norm(x))`` (LayerNorm ``norm``); a final
LayerNorm ``norm_f`` follows (an identity when ``config.final_norm`` is false). The mixer is a
Mamba-1 block whose submodules and parameters are named like those of mamba-ssm's ``Mamba``
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``; expand 2,
d_state 16, d_conv 4, dt_rank ``ceil(dim / 16)``), and the stack is named like its
``MixerModel`` (``layers.{i}.norm``, ``layers.{i}.mixer``, ``norm_f``).

The model is causal over the token sequence, and everything it remembers is in the state, so
running a sequence in chunks with the state carried equals running it whole. Positions are not
used: the tokens already carry a position embedding, and the scan order is the raster order of
regions in which the chunks arrive.

State: a list with one pair per layer,

* ``conv_state`` (B, d_inner, d_conv - 1): the last ``d_conv - 1`` inputs of the causal
  depthwise convolution (zeros before the first chunk = the convolution's zero padding);
* ``ssm_state`` (B, d_inner, d_state), float32: the selective scan's hidden state.

The scan runs on mamba-ssm's fused CUDA kernel when it is installed and the tokens are on a GPU
(:mod:`.mamba_ssm_adapter`), otherwise on a pure-PyTorch scan (:mod:`.selective_scan`):
chunked on a GPU, sequential with vectorised blocks on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.config import ContextEncoderConfig
from xt_engine.models.context.base import ContextEncoder
from xt_engine.models.context.mamba_ssm_adapter import mamba_ssm_available, selective_scan_cuda
from xt_engine.models.context.selective_scan import (
    implicit_attention,
    selective_scan_chunked,
    selective_scan_sequential,
)

MambaLayerState = tuple[torch.Tensor, torch.Tensor]

# Timesteps per chunk of the pure-PyTorch chunked scan (GPUs without mamba-ssm). Its work per
# timestep grows with the chunk, which pays off on a GPU (fewer sequential steps) but not on a
# CPU, which takes selective_scan_sequential (2-core CPU, d_inner 128, d_state 16, L 4096, one
# run on a loaded host: sequential 0.12 s, reference loop 0.64 s, chunked 4: 3.1 s, 8: 20 s).
GPU_SCAN_CHUNK = 64


class MambaMixer(nn.Module):
    """One Mamba-1 block: ``x`` (B, L, dim) and its layer state -> (B, L, dim), next state."""

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * dim
        self.dt_rank = math.ceil(dim / 16)
        d_inner = self.d_inner

        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, kernel_size=d_conv, groups=d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        # A = -exp(A_log) = -(1, 2, ..., d_state) in every channel (S4D-real initialisation)
        a_init = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a_init))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, dim, bias=False)
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D._no_weight_decay = True  # type: ignore[attr-defined]

        # dt_proj: small weights, and a bias such that softplus(bias) is log-uniform in
        # [dt_min, dt_max] (the bias is the inverse softplus of the sampled step size).
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        log_dt = torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> MambaLayerState:
        conv_state = torch.zeros(
            batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype
        )
        ssm_state = torch.zeros(
            batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32
        )
        return conv_state, ssm_state

    def forward(
        self, x: torch.Tensor, state: MambaLayerState, need_attention: bool = False
    ) -> tuple[torch.Tensor, MambaLayerState, torch.Tensor | None]:
        """``x`` (B, L, dim), ``state`` (conv_state, ssm_state) -> (B, L, dim), next state, and
        with ``need_attention`` the chunk's implicit attention (B, L, L) (else None)."""
        conv_state, ssm_state = state
        xs, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each

        # causal depthwise convolution, continuing from the previous chunk's last inputs
        conv_in = torch.cat([conv_state.to(xs.dtype), xs], dim=2)  # (B, d_inner, d_conv-1+L)
        next_conv_state = conv_in[:, :, conv_in.shape[2] - (self.d_conv - 1) :]
        xs = F.silu(
            F.conv1d(conv_in, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)
        )  # (B, d_inner, L)

        # input-dependent step size and projections
        x_dbl = self.x_proj(xs.transpose(1, 2))  # (B, L, dt_rank + 2 * d_state)
        dt, b_in, c_out = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (B, d_inner, L), bias: scan
        b_in = b_in.transpose(1, 2).contiguous()  # (B, d_state, L)
        c_out = c_out.transpose(1, 2).contiguous()  # (B, d_state, L)
        A = -torch.exp(self.A_log.float())  # (d_inner, d_state)

        implicit = (
            implicit_attention(F.softplus(delta + self.dt_proj.bias[:, None]), A, b_in, c_out)
            if need_attention
            else None
        )
        scan_args = (xs, delta, A, b_in, c_out, self.D.float(), z, self.dt_proj.bias.float())
        if xs.is_cuda and mamba_ssm_available():
            y, next_ssm_state = selective_scan_cuda(
                *scan_args, delta_softplus=True, initial_state=ssm_state
            )
        elif xs.is_cuda:
            y, next_ssm_state = selective_scan_chunked(
                *scan_args, delta_softplus=True, initial_state=ssm_state, chunk_size=GPU_SCAN_CHUNK
            )
        else:  # the CPU: a time loop with vectorised blocks beats the chunked scan
            y, next_ssm_state = selective_scan_sequential(
                *scan_args, delta_softplus=True, initial_state=ssm_state
            )
        return self.out_proj(y.transpose(1, 2)), (next_conv_state, next_ssm_state), implicit


class _MambaLayer(nn.Module):
    """Pre-norm residual block ``x + mixer(norm(x))``; with ``residual_from_norm`` (the released
    xT layout) ``h + mixer(h)`` where ``h = norm(x)``."""

    def __init__(self, dim: int, residual_from_norm: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim)
        self.residual_from_norm = residual_from_norm

    def forward(
        self, x: torch.Tensor, state: MambaLayerState, need_attention: bool = False
    ) -> tuple[torch.Tensor, MambaLayerState, torch.Tensor | None]:
        h = self.norm(x)
        out, state, implicit = self.mixer(h, state, need_attention)
        return (h if self.residual_from_norm else x) + out, state, implicit


class MambaContext(ContextEncoder):
    kind = "mamba"

    def __init__(self, config: ContextEncoderConfig) -> None:
        super().__init__()
        # layout "xt" reproduces the released xT decoder: residual from the normalised input and
        # even layers reading the sequence backwards (whole-sequence calls only: not streamable)
        self.xt_layout = config.layout == "xt"
        self.layers = nn.ModuleList(
            _MambaLayer(config.dim, residual_from_norm=self.xt_layout) for _ in range(config.depth)
        )
        self.norm_f = nn.LayerNorm(config.dim) if config.final_norm else nn.Identity()

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> list[MambaLayerState]:
        layers = cast(Iterable[_MambaLayer], self.layers)  # a ModuleList yields plain Modules
        return [layer.mixer.init_state(batch_size, device, dtype) for layer in layers]

    def run_chunk(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: list[MambaLayerState],
        need_weights: bool,
    ) -> tuple[torch.Tensor, list[MambaLayerState], torch.Tensor | None]:
        """``positions`` are unused (tokens carry a position embedding). Weights: the last
        layer's implicit attention within the chunk, (B, L, L), mean over channels of
        |alpha_{t,s}| (see :func:`implicit_attention`; not softmax weights)."""
        x = tokens
        next_state = []
        implicit = None
        last = len(self.layers) - 1
        for index, (layer, layer_state) in enumerate(zip(self.layers, state, strict=True)):
            backwards = self.xt_layout and index % 2 == 0
            x, layer_state, implicit = layer(
                x.flip(1) if backwards else x, layer_state, need_weights and index == last
            )
            if backwards:
                x = x.flip(1)
                implicit = implicit.flip(1, 2) if implicit is not None else None
            next_state.append(layer_state)
        return self.norm_f(x), next_state, implicit
