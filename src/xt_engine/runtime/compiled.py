"""``compile=True`` runs: the stateless parts of a model through ``torch.compile`` (inductor).

The region encoder, the input projection and the head run the same computation on every batch
of regions, so they compile once per batch shape (``dynamic=False``: a run has at most a few
shapes, a full batch and the last one) and are reused. Inductor's ``freezing`` folds the weights
in as constants (oneDNN prepacks them). The context encoder is left eager: its state (memory)
grows from chunk to chunk and it holds the Python control flow of the carried memory. A
compiled part computes what the eager part does up to fp32 rounding (fused kernels sum in
another order), so labels agree with eager runs, also after the weights change in place
(``tests/xt_engine/test_compiled.py``).

The compiled parts live in a *view* of the model (:func:`compiled_view`): a shallow copy that
shares every parameter and buffer with the model and owns only its table of submodules, so the
model the caller holds is never changed. Views are cached per model: a second run over the same model reuses
the compiled code. Compiling needs a C++ compiler on CPU (inductor); where it fails, the run
stops with a :class:`~xt_engine.errors.ConfigError` that names ``--compile``.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import nn

from xt_engine.errors import ConfigError
from xt_engine.models import XTModel

COMPILED_PARTS = ("region_encoder", "input_proj", "head")
BACKEND: Any = "inductor"  # torch.compile's backend (a test swaps in one that fails)
_VIEWS: weakref.WeakKeyDictionary[XTModel, dict[str, XTModel]] = weakref.WeakKeyDictionary()


class CompiledPart(nn.Module):
    """``part`` through ``torch.compile``; attributes other than ``forward`` are the part's
    (e.g. a head's ``cls_token``). A failure to compile is a :class:`ConfigError`."""

    def __init__(self, part: nn.Module, name: str) -> None:
        super().__init__()
        self.part = part
        self.name = name
        # freezing: the weights are folded in as constants and prepacked for oneDNN (inference
        # only, which a view is); figures in docs/benchmarks.md (CPU precision options)
        options: dict[str, Any] | None = {"freezing": True} if BACKEND == "inductor" else None
        self._compiled = torch.compile(part, dynamic=False, backend=BACKEND, options=options)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._compiled(*args, **kwargs)
        except Exception as err:
            if _is_compile_failure(err):
                raise ConfigError(
                    f"torch.compile could not compile the model's {self.name} on this machine "
                    f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})",
                    "run without --compile (compile=False), or install a C++ compiler "
                    "(inductor needs one on CPU)",
                ) from err
            raise

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["part"], name)


def _is_compile_failure(err: Exception) -> bool:
    """True for the errors torch raises when compiling (not when the computation itself
    fails): dynamo's and inductor's exception modules."""
    module = type(err).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor"))


def compiled_view(model: XTModel, quantize: str = "none") -> XTModel:
    """``model`` with :data:`COMPILED_PARTS` compiled (cached per model and ``quantize``;
    ``model`` unchanged). ``quantize="int8"``: the region encoder compiled is an int8 copy
    (:mod:`xt_engine.runtime.quantized`)."""
    views = _VIEWS.setdefault(model, {})
    view = views.get(quantize)
    if view is not None:
        return view
    view = copy.copy(model)
    # the view's own table of submodules; parameters, buffers and the parts stay shared
    view._modules = dict(model._modules)
    parts = dict(model._modules)
    if quantize == "int8":
        from xt_engine.runtime.quantized import quantized_copy

        encoder = model._modules["region_encoder"]
        assert encoder is not None
        first = next(encoder.parameters())
        size, channels = model.region_size, model.config.region_encoder.in_chans
        example = torch.zeros(1, channels, size, size, device=first.device)
        parts["region_encoder"] = quantized_copy(encoder, example)
    for name in COMPILED_PARTS:
        view._modules[name] = CompiledPart(parts[name], name)  # type: ignore[arg-type]
    views[quantize] = view
    return view
