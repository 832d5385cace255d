"""napari-xt: run xT on the image in the viewer and overlay its results.

The heavy lifting lives in :mod:`xt_engine`; this package holds only the napari side (dock widget,
reader, sample data). Importing it does not import Qt; the widget module does.
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def _keep_triton_out_without_cuda() -> None:
    """Triton (shipped with CUDA builds of torch) bundles LLVM; loaded into a napari process after
    Mesa's software OpenGL (llvmpipe, also LLVM) it segfaults, and torchvision/timm import it via
    ``torch._dynamo``. Triton only serves GPU kernel compilation, so without CUDA we keep it from
    loading (torch then treats it as not installed)."""
    if "triton" in sys.modules:
        return
    import torch

    if not torch.cuda.is_available():
        sys.modules["triton"] = None  # type: ignore[assignment]


_keep_triton_out_without_cuda()
