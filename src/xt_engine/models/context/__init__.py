"""Context encoders: one module per kind, one streaming interface (:mod:`.base`)."""

from __future__ import annotations

from xt_engine.config import ContextEncoderConfig
from xt_engine.errors import ConfigError
from xt_engine.models.context.base import ContextEncoder, sincos_position_embedding
from xt_engine.models.context.bidirectional import BidirectionalContext
from xt_engine.models.context.hyper import HyperContext
from xt_engine.models.context.mamba import MambaContext
from xt_engine.models.context.none import NoContext
from xt_engine.models.context.sliding_window import SlidingWindowContext
from xt_engine.models.context.transformer_xl import TransformerXL

_BUILDERS = {
    "none": NoContext,
    "transformer_xl": TransformerXL,
    "hyper": HyperContext,
    "mamba": MambaContext,
    "sliding_window": SlidingWindowContext,
}


def build_context_encoder(config: ContextEncoderConfig) -> ContextEncoder:
    """The context encoder for ``config.kind`` (wrapped in both directions when
    ``config.bidirectional``)."""
    if config.bidirectional and config.kind != "none":
        return BidirectionalContext(_build_one(config), _build_one(config), config.dim)
    return _build_one(config)


def _build_one(config: ContextEncoderConfig) -> ContextEncoder:
    if config.kind == "none":
        return NoContext()
    builder = _BUILDERS.get(config.kind)
    if builder is None:
        raise ConfigError(
            f"context_encoder.kind={config.kind!r} is not available in this build yet",
            f"use one of {', '.join(sorted(_BUILDERS))}",
        )
    return builder(config)


__all__ = [
    "BidirectionalContext",
    "ContextEncoder",
    "build_context_encoder",
    "sincos_position_embedding",
]
