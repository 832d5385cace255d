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


FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes bf16 in hardware (``avx512_bf16`` or ``amx_bf16`` among its
    flags; ``cpuinfo``: the text of ``/proc/cpuinfo``, read when None). None where the flags
    cannot be read (not Linux). Without them bf16 autocast is emulated and slower than fp32
    (0.16x measured on an AVX2 AMD EPYC, docs/benchmarks.md)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return any(flag in value.split() for flag in FAST_BF16_FLAGS)
    return None


def slow_precision_note(precision: str, device: str | torch.device) -> str | None:
    """One line telling a user that ``precision`` is slower than fp32 on this CPU, else None."""
    if (
        torch.device(device).type != "cpu"
        or precision != "bf16"
        or cpu_has_fast_bf16() is not False
    ):
        return None
    return (
        "this CPU has no AVX512-BF16 or AMX: bf16 runs emulated, several times slower than "
        "fp32 (--precision fp32 or auto is faster here)"
    )
