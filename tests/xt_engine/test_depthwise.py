"""The depthwise convolutions' CPU backward (:mod:`xt_engine.models.depthwise`) against torch's
own (the reference): the same forward bit for bit, the same gradients to float rounding, for the
shapes the region encoders train at; the region encoder switches exactly the qualifying
convolutions and keeps its state dict."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xt_engine.models import create_model
from xt_engine.models.depthwise import DepthwiseConv2d, qualifies, use_fast_depthwise_backward


def _pair(channels: int, kernel: int, bias: bool) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(0)
    reference = nn.Conv2d(
        channels, channels, kernel, padding=kernel // 2, groups=channels, bias=bias
    )
    fast = copy.deepcopy(reference)
    assert use_fast_depthwise_backward(fast) == 1 and type(fast) is DepthwiseConv2d
    return reference, fast


@pytest.mark.parametrize(
    ("shape", "kernel", "bias", "channels_last"),
    [
        ((128, 48, 4, 4), 7, True, False),  # the suite's deepest stage: kernel wider than the map
        ((16, 24, 32, 32), 7, True, False),
        ((2, 8, 33, 17), 7, False, False),  # odd, non-square maps, no bias
        ((4, 16, 8, 8), 3, True, True),  # channels-last input
        ((1, 4, 5, 5), 5, True, False),
    ],
)
def test_gradients_equal_torchs_backward(
    shape: tuple[int, int, int, int], kernel: int, bias: bool, channels_last: bool
) -> None:
    reference, fast = _pair(shape[1], kernel, bias)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    outputs, grads = [], []
    for conv in (reference, fast):
        xi = x.clone().requires_grad_()
        y = conv(xi)
        y.backward(grad)
        outputs.append(y.detach())
        expected = "_DepthwiseConvBackward" if conv is fast else "ConvolutionBackward0"
        assert type(y.grad_fn).__name__ == expected  # the fast path ran, or torch's
        grads.append([xi.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
    assert torch.equal(outputs[0], outputs[1])  # one F.conv2d either way
    for want, got in zip(grads[0], grads[1], strict=True):
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_only_what_is_needed_is_computed_and_a_frozen_input_gets_none() -> None:
    reference, fast = _pair(6, 7, True)
    x = torch.randn(2, 6, 9, 9)  # no grad for the input (a stem's pixels)
    fast(x).sum().backward()
    reference(x).sum().backward()
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast.bias.grad, reference.bias.grad)


def test_without_grad_or_under_autocast_it_is_nn_conv2d() -> None:
    reference, fast = _pair(8, 7, True)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        assert torch.equal(fast(x), reference(x))
    with torch.inference_mode():
        assert torch.equal(fast(x), reference(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast(x.requires_grad_())
    assert y.grad_fn is not None and "Convolution" in type(y.grad_fn).__name__


def test_the_region_encoder_switches_its_depthwise_convs_and_keeps_its_state_dict() -> None:
    model = create_model("test_convnext_txl")
    convs = [m for m in model.region_encoder.modules() if isinstance(m, nn.Conv2d)]
    fast = [m for m in convs if type(m) is DepthwiseConv2d]
    assert fast and len(fast) == sum(m.groups > 1 for m in convs)  # every depthwise conv, no other
    assert not any(qualifies(m) for m in convs)  # nothing left behind
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if type(m) is DepthwiseConv2d:
            m.__class__ = nn.Conv2d
    assert list(plain.state_dict()) == list(model.state_dict())

    # one training step's gradients of the whole model: the fast path against torch's backward
    ran: list[str] = []
    for m in fast:
        m.register_forward_hook(lambda _m, _i, out: ran.append(type(out.grad_fn).__name__))
    x = torch.rand(1, 4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    rc = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    for m in (model, plain):
        m.train()
        out, _ = m(x, rc, m.init_state(1))
        out.logits.square().mean().backward()
    assert ran == ["_DepthwiseConvBackward"] * len(fast)
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
