"""``quantize="int8"`` runs: the region encoder's linear layers as int8 (the only module that
imports torchao, an optional extra: ``pip install "napari-xt[int8]"``).

torchao's ``Int8DynamicActivationInt8WeightConfig`` stores each linear layer's weight as int8
(per output channel) and quantises its input per token on every call; under ``torch.compile``
(inductor) the pair runs as one int8 matrix product (VNNI on x86). Eager, the per-call
quantisation costs more than the int8 product gains (0.75x fp32 on SwinV2-T), so a quantised
run is always a compiled one (``compile=True``; without it the run is refused).

Only the linear layers the backbone calls as modules are quantised: a layer whose weight is
read as a tensor (timm's SwinV2 attention calls ``F.linear(x, weight=qkv.weight, ...)``) would
receive a quantised tensor in a function torchao does not handle, so one probe forward pass
with hooks finds the called ones. The quantised encoder is a copy: the model the caller holds
keeps its fp32 weights (and its provenance hash). Labels are not those of fp32 bit for bit;
``benchmarks/cpu_precision.py`` measures the agreement (and ``tests/xt_engine/test_quantized.py``
bounds it on the trained demo model).
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import torch
from torch import nn

from xt_engine.errors import ConfigError

QUANTIZATIONS = ("none", "int8")
INSTALL_HINT = 'install torchao (pip install "napari-xt[int8]")'


def check_quantize(quantize: str, compile: bool) -> None:
    """Refuse an unknown ``quantize``, int8 without ``compile`` or without torchao
    (``ConfigError``)."""
    if quantize not in QUANTIZATIONS:
        raise ConfigError(
            f"quantize {quantize!r} is unknown", f"use one of {', '.join(QUANTIZATIONS)}"
        )
    if quantize == "int8" and not compile:
        raise ConfigError(
            "int8 quantisation runs compiled only (eager int8 is slower than fp32)",
            "add --compile (compile=True) or leave --quantize at none",
        )
    if quantize == "int8":
        _torchao()  # a missing extra is refused before anything is written


def _torchao() -> Any:
    try:
        return importlib.import_module("torchao.quantization")
    except ImportError as err:
        raise ConfigError(f"--quantize int8 needs torchao ({err})", INSTALL_HINT) from err


def called_linears(part: nn.Module, example: torch.Tensor) -> set[str]:
    """Names (in ``part``) of the ``nn.Linear`` layers whose own forward runs on ``example``."""
    called: set[str] = set()
    handles = []
    for name, module in part.named_modules():
        if isinstance(module, nn.Linear):
            handles.append(
                module.register_forward_hook(lambda *_, name=name: called.add(name))
            )
    try:
        with torch.inference_mode():
            part(example)
    finally:
        for handle in handles:
            handle.remove()
    return called


def quantized_copy(part: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``part`` whose called linear layers are int8 (weights per channel, inputs
    per token, dynamically); ``example``: one input of ``part`` for the probe pass."""
    quantization = _torchao()
    names = called_linears(part, example)
    if not names:
        raise ConfigError(
            "--quantize int8 found no linear layer to quantise in the region encoder",
            "leave --quantize at none for this model",
        )
    quantized = copy.deepcopy(part)
    quantization.quantize_(
        quantized,
        quantization.Int8DynamicActivationInt8WeightConfig(),
        filter_fn=lambda module, fqn: isinstance(module, nn.Linear) and fqn in names,
    )
    return quantized


def quantized_weight_names(part: nn.Module) -> set[str]:
    """Names of the linear layers of ``part`` holding a torchao quantised weight."""
    return {
        name
        for name, module in part.named_modules()
        if isinstance(module, nn.Linear) and type(module.weight).__module__.startswith("torchao")
    }
