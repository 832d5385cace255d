"""Which model the widget runs: loading it off the GUI thread, and its one-line summary."""

from __future__ import annotations

from pathlib import Path

from napari_xt._threads import call_in_fresh_thread
from xt_engine.models import XTModel, list_models
from xt_engine.weights.loading import load_model, load_model_parts, user_models, weights_record

UNTRAINED_HEADER = "Untrained architectures (random weights: add weight files, or train them)"


def model_sections() -> tuple[list[str], list[str]]:
    """Registered names offered in the widget: (with trained weights, architectures only).
    ``test_*`` contract toys are not offered; untrained ones only run with weight files."""
    names = user_models()
    trained = [n for n in names if weights_record(n).trained]
    return trained, [n for n in names if n not in trained]


ModelKey = tuple[str, str | None, str | None]  # spec, region weights, context + head weights


class ModelChoice:
    """The chosen model: a spec (registered name or checkpoint path) plus optional separate
    region encoder / context + head weight files. Loading is slow (seconds for a large model)
    and runs torch ops, so it never runs on the GUI thread: the widget runs :func:`load_choice`
    in a napari worker and hands the result to :meth:`accept`; the last loaded model is kept."""

    def __init__(self) -> None:
        self.region_weights: str | None = None
        self.context_weights: str | None = None
        self.model: XTModel | None = None
        self.summary = ""
        self.key: ModelKey | None = None

    def key_for(self, spec: str) -> ModelKey:
        """What identifies a choice: the spec and the weight files chosen now."""
        return (spec, self.region_weights, self.context_weights)

    def loaded(self, key: ModelKey) -> XTModel | None:
        """The model of ``key`` if it is the one loaded, else None."""
        return self.model if key == self.key else None

    def accept(self, key: ModelKey, model: XTModel, summary: str) -> None:
        self.key, self.model, self.summary = key, model, summary


def load_choice(key: ModelKey) -> tuple[XTModel, str]:
    """The model of ``key`` and its summary (raises the engine's XTError). Blocks: call it in a
    worker thread. The torch work runs in a fresh thread that ends with it, so no OpenMP pool
    is left behind beside the runs' (see :mod:`napari_xt._threads`)."""
    return call_in_fresh_thread(_load_and_describe, key)


def _load_and_describe(key: ModelKey) -> tuple[XTModel, str]:
    spec, region, context = key
    if (region or context) and spec in list_models():
        model = load_model_parts(spec, region, context)
    else:
        model = load_model(spec)
    return model, describe(model, key)


def describe(model: XTModel, key: ModelKey) -> str:
    """``backbone -> context; K classes; P M parameters; C channel(s)``."""
    spec, region, context_file = key
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    context = cfg.context_encoder.kind + (
        " (both directions)" if cfg.context_encoder.bidirectional else ""
    )
    files = [Path(p).name for p in (region, context_file) if p]
    weights = f" (weights: {', '.join(files)})" if files and spec in list_models() else ""
    return (
        f"{cfg.region_encoder.name} -> {context}{weights}; {cfg.head.num_classes} classes; "
        f"{params / 1e6:.2f} M parameters; {cfg.region_encoder.in_chans} channel(s)"
    )
