"""The autocast dtype a run's ``precision`` asks for on a device."""

from __future__ import annotations

import torch

from xt_engine.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain fp32)."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision {precision!r} is unknown", f"use one of {', '.join(PRECISIONS)}"
        )
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            "fp16 autocast needs a CUDA device", "use --precision fp32 or bf16 on CPU"
        )
    return torch.bfloat16 if precision == "bf16" else torch.float16
