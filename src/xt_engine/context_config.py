"""The context encoder's configuration (:class:`ContextEncoderConfig`), part of
:class:`xt_engine.config.XTConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from xt_engine.errors import ConfigError

CONTEXT_KINDS = ("none", "transformer_xl", "hyper", "mamba", "sliding_window")
MLP_ACTIVATIONS = ("silu", "gelu")
POSITION_ORDERS = ("row_col", "col_row")
TOKEN_ORDERS = ("region", "image")
DEFAULT_RELATIVE_RANGE = 6  # tokens: +-3 regions of 2 x 2 tokens ("exactly 2 regions above")
# What a ``napari-xt/1`` checkpoint means by a field it does not state (the defaults then).
V1_DEFAULTS: dict[str, object] = {
    "bidirectional": False,
    "distance_bias": False,
    "relative_range": 0,
    "position_scale": 1.0,
}


@dataclass
class ContextEncoderConfig:
    """A long-sequence model over all region tokens of an image.

    ``chunk_regions`` regions are processed at a time; ``memory_tokens`` is how many past tokens a
    Transformer-XL / Hyper layer keeps as carried memory (the window of ``sliding_window``).
    ``bidirectional`` adds a second encoder of the same kind that reads the sequence backwards,
    so context reaches a region from every direction (dense tasks); streaming then takes two
    passes over the image. Unset (None), the model's config decides: bidirectional for
    segmentation and detection heads, causal for classification (a bidirectional context cannot
    stream to one image class) and for kind ``none``; a context config alone is causal.
    ``layout="xt"`` (mamba only) reproduces the released xT Mamba decoder (residual from the
    normalised input, even layers reversed; whole-sequence calls only). ``final_norm`` ends the
    encoder with a LayerNorm (the released xT decoder has none; its imports set it false).
    ``distance_bias`` (transformer_xl only) adds to every attention score
    ``-slope_h * distance`` between query and key tokens in the 2-D token grid, one learned
    slope per head and layer (a 2-D ALiBi): heads start local to global (e-fold fall-off at
    2 ... 128 tokens), so "what lies within k regions" is easy to learn.
    ``relative_range`` K (transformer_xl only; 0: off) adds a learned bias per head, layer and
    (row, col) offset between query and key tokens, offsets clipped to [-K, K]. Unset (None),
    both follow the kind: on (``distance_bias`` true, ``relative_range`` 6) for
    transformer_xl, off for the other kinds.

    The defaults are what the context task suite and the context benchmark measured to learn
    every dependency kind at a practical budget (docs/benchmarks.md): both directions, the two
    2-D biases and ``position_scale`` 0.1. Checkpoints of format ``napari-xt/1`` were written
    when the defaults were xT's (causal, no biases, ``position_scale`` 1); a field such a file
    does not state is read with that old value (:data:`V1_DEFAULTS`), so it computes what it
    was trained to.

    ``chunk_regions`` alone cuts the region sequence into context chunks (never the batch size,
    the device or a resume point), so a model gives one answer per input.

    Conventions that differ between this project's models and imported xT checkpoints:
    ``norm_eps`` (RMSNorm eps of transformer_xl layers; xT: 1e-5), ``mlp_activation`` of the
    gated MLP (``silu``; xT: ``gelu``), ``position_order`` of the 2-D sin-cos embedding's halves
    (``row_col``; xT/MAE: ``col_row``, the first half encodes the column), ``position_scale``
    (the embedding's factor before it is added to the tokens; 1 in xT; its unit-amplitude
    sin-cos otherwise outweighs an untrained encoder's tokens several times, and attention
    starts out positional), ``token_order``
    (``region``: region by region in raster order, streamable; ``image``: xT's row-major order
    over the stitched token map of the whole image, which needs the whole sequence in one call).
    ``max_sequence_tokens``: the longest sequence a whole-sequence model (``token_order`` image,
    mamba ``layout`` xt) runs in one call; longer inputs are refused, never streamed wrongly.

    ``hyper_*`` (kind ``hyper``): exact attention while memory + chunk has at most
    ``hyper_exact_threshold`` keys, else the approximation with ``hyper_block_size``,
    ``hyper_num_samples`` sampled keys and ``hyper_num_hashes`` LSH bits; ``hyper_seed`` seeds
    the LSH planes and the per-chunk sample generator (same input, same output).
    """

    kind: str = "transformer_xl"
    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    chunk_regions: int = 8
    memory_tokens: int = 512
    bidirectional: bool | None = None
    final_norm: bool = True
    layout: str = "prenorm"
    distance_bias: bool | None = None
    relative_range: int | None = None
    norm_eps: float = 1e-6
    mlp_activation: str = "silu"
    position_order: str = "row_col"
    position_scale: float = 0.1
    token_order: str = "region"
    max_sequence_tokens: int = 65536
    hyper_exact_threshold: int = 1024
    hyper_block_size: int = 256
    hyper_num_samples: int = 256
    hyper_num_hashes: int = 7
    hyper_seed: int = 0

    def __post_init__(self) -> None:
        attention = self.kind == "transformer_xl"
        if self.distance_bias is None:
            self.distance_bias = attention
        if self.relative_range is None:
            self.relative_range = DEFAULT_RELATIVE_RANGE if attention else 0

    def validate(self) -> None:
        if self.kind not in CONTEXT_KINDS:
            raise ConfigError(
                f"context_encoder.kind={self.kind!r} is unknown",
                f"use one of {', '.join(CONTEXT_KINDS)}",
            )
        if self.dim % self.num_heads:
            raise ConfigError(
                f"context_encoder.dim={self.dim} is not divisible by num_heads={self.num_heads}",
                "pick dim as a multiple of num_heads",
            )
        if self.dim % 4:
            raise ConfigError(
                f"context_encoder.dim={self.dim} is not a multiple of 4 (2-D sin-cos positions)",
                "use e.g. 128 or 256",
            )
        for name in ("depth", "chunk_regions"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"context_encoder.{name} must be >= 1", f"set {name} to 1 or more"
                )
        if self.layout not in ("prenorm", "xt") or (self.layout == "xt" and self.kind != "mamba"):
            raise ConfigError(
                f"context_encoder.layout={self.layout!r} is not valid for kind {self.kind!r}",
                "use 'prenorm' ('xt' exists for kind 'mamba' only)",
            )
        if self.memory_tokens < 0:
            raise ConfigError(
                "context_encoder.memory_tokens must be >= 0", "use 0 to disable memory"
            )
        choices = {
            "mlp_activation": MLP_ACTIVATIONS,
            "position_order": POSITION_ORDERS,
            "token_order": TOKEN_ORDERS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"context_encoder.{name}={getattr(self, name)!r} is unknown",
                    f"use one of {', '.join(allowed)}",
                )
        if not 0.0 < self.norm_eps < 1.0:
            raise ConfigError(
                f"context_encoder.norm_eps={self.norm_eps} is not in (0, 1)", "use 1e-6 or 1e-5"
            )
        for name in (
            "max_sequence_tokens",
            "hyper_exact_threshold",
            "hyper_block_size",
            "hyper_num_samples",
            "hyper_num_hashes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"context_encoder.{name} must be >= 1", f"set {name} to 1 or more"
                )
        if not 0.0 <= self.position_scale <= 10.0:
            raise ConfigError(
                f"context_encoder.position_scale={self.position_scale} is not in [0, 10]",
                "use 1 (xT) or e.g. 0.1",
            )
        if self.relative_range and (self.kind != "transformer_xl" or self.relative_range < 0):
            raise ConfigError(
                f"context_encoder.relative_range={self.relative_range} is not available for "
                f"kind {self.kind!r}",
                "set relative_range to 0 or null (the kind's default), or use kind "
                "'transformer_xl' with a range >= 1",
            )
        if self.distance_bias and self.kind != "transformer_xl":
            raise ConfigError(
                f"context_encoder.distance_bias is not available for kind {self.kind!r}",
                "set distance_bias to false or null (the kind's default), or use kind "
                "'transformer_xl'",
            )


__all__ = [
    "CONTEXT_KINDS",
    "DEFAULT_RELATIVE_RANGE",
    "MLP_ACTIVATIONS",
    "POSITION_ORDERS",
    "TOKEN_ORDERS",
    "V1_DEFAULTS",
    "ContextEncoderConfig",
]
