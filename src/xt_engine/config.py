"""Typed model configuration.

A model is fully described by an :class:`XTConfig`; checkpoints carry it as JSON, so a file alone
rebuilds the architecture. Dicts are parsed at the edges (CLI, checkpoints) with
:meth:`XTConfig.from_dict`; every field has a default except the ones that define the task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xt_engine.errors import ConfigError

CONTEXT_KINDS = ("none", "transformer_xl", "hyper", "mamba", "sliding_window")
# Kinds whose implementation has landed; the others are accepted by the schema but rejected by
# the factory with a clear message until their module exists.
TASKS = ("segmentation", "classification", "detection")
INPUT_SCALINGS = ("auto", "uint8", "uint16", "float")
POOLINGS = ("mean", "cls")


@dataclass
class TilingConfig:
    """Nested tokenization: square regions of ``region_size`` px, read in raster order."""

    region_size: int = 256
    overlap: int = 0

    def validate(self) -> None:
        if self.region_size < 32 or self.region_size % 32:
            raise ConfigError(
                f"tiling.region_size={self.region_size} is not a positive multiple of 32",
                "use 256 or 512",
            )
        if not 0 <= self.overlap < self.region_size // 2:
            raise ConfigError(
                f"tiling.overlap={self.overlap} must be in [0, region_size/2)",
                "use 0 or a small margin such as 32",
            )


@dataclass
class RegionEncoderConfig:
    """A timm backbone used with ``features_only=True``.

    ``weights`` names a local timm state-dict file (.safetensors/.pth/.bin) or is None (random
    init). ``input_scaling`` maps raw pixels to [0, 1] before ``mean``/``std`` normalisation:
    ``auto`` divides by the dtype's maximum (uint8 -> 255, uint16 -> 65535, float unchanged).
    """

    name: str = "convnext_atto"
    in_chans: int = 3
    weights: str | None = None
    input_scaling: str = "auto"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def validate(self) -> None:
        if not self.name:
            raise ConfigError(
                "region_encoder.name is empty", "name a timm model, e.g. convnext_atto"
            )
        if self.in_chans < 1:
            raise ConfigError(f"region_encoder.in_chans={self.in_chans} < 1", "use 1, 2, 3 or more")
        if self.input_scaling not in INPUT_SCALINGS:
            raise ConfigError(
                f"region_encoder.input_scaling={self.input_scaling!r} is unknown",
                f"use one of {', '.join(INPUT_SCALINGS)}",
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) not in (1, self.in_chans):
                raise ConfigError(
                    f"region_encoder.{name} has {len(value)} values for {self.in_chans} channels",
                    "give one value or one per channel",
                )


@dataclass
class ContextEncoderConfig:
    """A long-sequence model over all region tokens of an image.

    ``chunk_regions`` regions are processed at a time; ``memory_tokens`` is how many past tokens a
    Transformer-XL / Hyper layer keeps as carried memory (the window of ``sliding_window``).
    ``bidirectional`` adds a second encoder of the same kind that reads the sequence backwards,
    so context reaches a region from every direction (dense tasks); streaming then takes two
    passes over the image. ``layout="xt"`` (mamba only) reproduces the released xT Mamba decoder
    (residual from the normalised input, even layers reversed; whole-sequence calls only).
    ``final_norm`` ends the encoder with a LayerNorm (the released xT
    decoder has none; its imports set it false). ``distance_bias`` (transformer_xl only) adds
    to every attention score ``-slope_h * distance`` between query and key tokens in the 2-D
    token grid, one learned slope per head and layer (a 2-D ALiBi): heads start local to global
    (e-fold fall-off at 2 ... 128 tokens), so "what lies within k regions" is easy to learn.
    """

    kind: str = "transformer_xl"
    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    chunk_regions: int = 8
    memory_tokens: int = 512
    bidirectional: bool = False
    final_norm: bool = True
    layout: str = "prenorm"
    distance_bias: bool = False

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
        if self.distance_bias and self.kind != "transformer_xl":
            raise ConfigError(
                f"context_encoder.distance_bias is not available for kind {self.kind!r}",
                "set distance_bias to false, or use kind 'transformer_xl'",
            )


@dataclass
class HeadConfig:
    """The task head. Class 0 is background for segmentation.

    ``pool`` (classification): ``mean`` of all contextualised tokens, or ``cls``, a learned token
    run through the context encoder after the last region (the released xT layout).
    ``detection_threshold``: minimum centre score of a decoded detection.
    """

    task: str = "segmentation"
    num_classes: int = 2
    class_names: tuple[str, ...] | None = None
    class_colors: tuple[str, ...] | None = None
    decoder_dim: int = 64
    pool: str = "mean"
    detection_threshold: float = 0.3

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(
                f"head.task={self.task!r} is unknown", f"use one of {', '.join(TASKS)}"
            )
        if not 0.0 < self.detection_threshold < 1.0:
            raise ConfigError(
                f"head.detection_threshold={self.detection_threshold} is not in (0, 1)",
                "use e.g. 0.3",
            )
        if self.num_classes < 1:
            raise ConfigError(f"head.num_classes={self.num_classes} < 1", "use 2 or more")
        if self.pool not in POOLINGS:
            raise ConfigError(
                f"head.pool={self.pool!r} is unknown", f"use one of {', '.join(POOLINGS)}"
            )
        if self.task == "segmentation" and self.num_classes > 255:
            raise ConfigError(
                f"head.num_classes={self.num_classes} > 255 for segmentation",
                "use at most 255 classes (labels are stored as uint8)",
            )
        for name in ("class_names", "class_colors"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_classes:
                raise ConfigError(
                    f"head.{name} has {len(value)} entries for {self.num_classes} classes",
                    f"give exactly one entry per class in head.{name}",
                )

    def names(self) -> tuple[str, ...]:
        """Class names, defaulting to ``background, class_1, ...``."""
        if self.class_names is not None:
            return self.class_names
        return ("background",) + tuple(f"class_{i}" for i in range(1, self.num_classes))


@dataclass
class XTConfig:
    """The whole model: tiling, region encoder, context encoder and head."""

    tiling: TilingConfig = field(default_factory=TilingConfig)
    region_encoder: RegionEncoderConfig = field(default_factory=RegionEncoderConfig)
    context_encoder: ContextEncoderConfig = field(default_factory=ContextEncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self.tiling.validate()
        self.region_encoder.validate()
        self.context_encoder.validate()
        self.head.validate()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XTConfig:
        """Build from a (possibly partial) dict; unknown sections or fields raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a mapping, got {type(data).__name__}")
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(data) - set(sections)
        if unknown:
            raise ConfigError(
                f"unknown config section(s): {', '.join(sorted(unknown))}",
                f"use only {', '.join(sections)}",
            )
        kwargs = {
            name: _section(section_cls, name, data.get(name) or {})
            for name, section_cls in _SECTION_CLASSES.items()
        }
        return cls(**kwargs)


_T = TypeVar("_T")
_SECTION_CLASSES: dict[str, type] = {
    "tiling": TilingConfig,
    "region_encoder": RegionEncoderConfig,
    "context_encoder": ContextEncoderConfig,
    "head": HeadConfig,
}


def _section(section_cls: type[_T], name: str, values: dict[str, Any]) -> _T:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {name!r} must be a mapping")
    allowed = {f.name for f in dataclasses.fields(section_cls)}  # type: ignore[arg-type]
    unknown = set(values) - allowed
    if unknown:
        raise ConfigError(
            f"unknown field(s) in {name}: {', '.join(sorted(unknown))}",
            f"valid fields are {', '.join(sorted(allowed))}",
        )
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return section_cls(**clean)
    except TypeError as err:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(f"bad values in {name}: {err}") from err
