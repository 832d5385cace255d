"""Which model the widget runs: loading (cached by choice) and its one-line summary."""

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


class ModelChoice:
    """The model for a spec (registered name or checkpoint path) plus optional separate region
    encoder / context + head weight files; loaded once per distinct choice."""

    def __init__(self) -> None:
        self.region_weights: str | None = None
        self.context_weights: str | None = None
        self.model: XTModel | None = None
        self._key: tuple[str | None, ...] | None = None

    def load(self, spec: str) -> XTModel:
        """The model for ``spec`` with the current weight files (raises the engine's XTError)."""
        separate = (self.region_weights, self.context_weights)
        key = (spec, *separate)
        if self.model is None or key != self._key:
            # loading runs torch ops: never on the GUI thread (see _threads)
            if any(separate) and spec in list_models():
                self.model = call_in_fresh_thread(load_model_parts, spec, *separate)
            else:
                self.model = call_in_fresh_thread(load_model, spec)
            self._key = key
        return self.model

    def summary(self, spec: str) -> str:
        """``backbone -> context; K classes; P M parameters; C channel(s)`` of ``load(spec)``."""
        model = self.load(spec)
        cfg = model.config
        params = sum(p.numel() for p in model.parameters())
        context = cfg.context_encoder.kind + (
            " (both directions)" if cfg.context_encoder.bidirectional else ""
        )
        files = [Path(p).name for p in (self.region_weights, self.context_weights) if p]
        weights = f" (weights: {', '.join(files)})" if files and spec in list_models() else ""
        return (
            f"{cfg.region_encoder.name} -> {context}{weights}; {cfg.head.num_classes} classes; "
            f"{params / 1e6:.2f} M parameters; {cfg.region_encoder.in_chans} channel(s)"
        )
