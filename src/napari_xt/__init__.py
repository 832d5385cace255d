"""napari-xt: run xT on the image in the viewer and overlay its results.

The heavy lifting lives in :mod:`xt_engine`; this package holds only the napari side (dock widget,
reader, sample data). Importing it does not import Qt; the widget module does. It installs
:class:`TritonGuard`, which keeps triton out only where it would crash the process.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

__version__ = "0.1.0"


def system_llvm_loaded() -> bool:
    """Whether a shared ``libLLVM`` is mapped into this process (Linux): Mesa's software OpenGL,
    llvmpipe, links it, and napari has loaded it once it made its first canvas."""
    try:
        with open("/proc/self/maps") as maps:
            return any("/libLLVM" in line for line in maps)
    except OSError:  # not Linux: no Mesa LLVM to clash with
        return False


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch half-imported: treat as no CUDA (the guard's other test decides)
        return False


class TritonGuard(importlib.abc.MetaPathFinder):
    """Refuses ``import triton`` in the one case where loading it crashes the process: no CUDA
    and Mesa's LLVM (llvmpipe) already loaded.

    Triton (shipped with CUDA builds of torch) bundles its own LLVM; loaded into a process that
    already holds Mesa's ``libLLVM`` (napari's canvas on llvmpipe: headless machines, Xvfb, VMs
    without a GPU driver) it segfaults, and torchvision/timm import it through ``torch._dynamo``
    when the plugin builds a model. Loaded before Mesa's LLVM it is harmless. Triton only
    compiles GPU kernels, so without CUDA it is refused then (torch treats it as not installed:
    ``sys.modules["triton"] = None``); with CUDA, or without Mesa's LLVM, nothing changes."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name != "triton" or not system_llvm_loaded() or _cuda_available():
            return None
        sys.modules["triton"] = None  # type: ignore[assignment]  # later imports fail at once
        raise ModuleNotFoundError(
            "napari-xt: triton is not loaded without CUDA once Mesa's llvmpipe OpenGL is "
            "(their two LLVMs crash the process)",
            name="triton",
        )


if "triton" not in sys.modules and not any(isinstance(f, TritonGuard) for f in sys.meta_path):
    sys.meta_path.insert(0, TritonGuard())
