"""A faster CPU backward for depthwise convolutions (ConvNeXt's 7 x 7), with nn.Conv2d's forward.

torch's CPU backward of a depthwise ``nn.Conv2d`` (``groups`` = channels) is slow: forward +
backward take 6-32x the forward at the region encoder's shapes (11 ms against 0.34 ms at
(128, 48, 4, 4)), ~14% of a training step of the context suite. :class:`DepthwiseConv2d`
computes the same gradients with ordinary convolutions; forward + backward are 2-5x faster
there, a suite training step ~1.1x (``benchmarks/depthwise_backward.py``, docs/benchmarks.md):

- grad input: the convolution of grad output with the kernel flipped (stride 1, same padding);
- grad weight: per channel, the correlation of the padded input with grad output, one grouped
  convolution over ``(1, C * N, H, W)`` summed over the batch;
- grad bias: grad output summed.

Only stride 1, dilation 1, zero padding ``k // 2`` of an odd square kernel, on the CPU, with
gradients needed and without autocast; everywhere else (no grad, inference mode, CUDA, bf16
autocast) it is ``nn.Conv2d.forward``.
The forward is ``F.conv2d`` either way, so outputs are bit for bit nn.Conv2d's; gradients agree
with torch's own backward (the reference) to float rounding
(``tests/xt_engine/test_depthwise.py``). :func:`use_fast_depthwise_backward` switches a
backbone's qualifying convolutions in place (their class only: parameters, names and state dict
are unchanged).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        pad = ctx.padding
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-1, -2), None, 1, pad, 1, c)
        if ctx.needs_input_grad[1]:
            k = weight.shape[-1]
            rows = x.transpose(0, 1).reshape(1, c * n, h, w)  # channel-major: (c, n) pairs
            kernels = grad.transpose(0, 1).reshape(c * n, 1, h, w)
            grad_w = F.conv2d(rows, kernels, None, 1, pad, 1, c * n)  # (1, C * N, k, k)
            grad_w = grad_w.view(c, n, k, k).sum(1, keepdim=True)
        if ctx.needs_input_grad[2]:  # False without a bias
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (depthwise, see :func:`qualifies`) whose CPU backward is
    :class:`_DepthwiseConv`'s; made by :func:`use_fast_depthwise_backward`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad)
        if (
            not needs_grad
            or input.device.type != "cpu"
            or input.dim() != 4
            or torch.is_autocast_enabled("cpu")
        ):
            return super().forward(input)
        return _DepthwiseConv.apply(input, self.weight, self.bias, self.padding[0])  # type: ignore[no-any-return]


def qualifies(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` that is depthwise (groups = in = out channels) with stride 1,
    dilation 1 and zero padding ``k // 2`` of an odd square kernel."""
    if type(module) is not nn.Conv2d:
        return False
    k = module.kernel_size
    return (
        module.groups == module.in_channels == module.out_channels
        and module.groups > 1
        and k[0] == k[1]
        and k[0] % 2 == 1
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.padding == (k[0] // 2, k[0] // 2)
        and module.padding_mode == "zeros"
    )


def use_fast_depthwise_backward(root: nn.Module) -> int:
    """Switch every qualifying convolution under ``root`` to :class:`DepthwiseConv2d`; returns
    how many."""
    count = 0
    for module in root.modules():
        if qualifies(module):
            module.__class__ = DepthwiseConv2d
            count += 1
    return count
