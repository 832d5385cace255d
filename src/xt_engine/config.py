"""Typed model configuration.

A model is fully described by an :class:`XTConfig`; checkpoints carry it as JSON, so a file alone
rebuilds the architecture. Dicts are parsed at the edges (CLI, checkpoints) with
:meth:`XTConfig.from_dict`; every field has a default except the ones that define the task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xt_engine.context_config import CONTEXT_KINDS, ContextEncoderConfig
from xt_engine.errors import ConfigError

TASKS = ("segmentation", "classification", "detection")
INPUT_SCALINGS = ("auto", "uint8", "uint16", "float", "db")
INPUT_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
MODALITIES = ("any", "brightfield", "fluorescence", "sar", "optical")
PIXEL_UNITS = ("nanometer", "micrometer", "millimeter", "meter", "kilometer", "degree")
DB_RANGE = (-30.0, 10.0)  # dB mapped to [0, 1] by input_scaling "db" without an input_range
POOLINGS = ("mean", "cls")


@dataclass
class TilingConfig:
    """Nested tokenization: square regions of ``region_size`` px, read in raster order.

    ``pad_value``: the value, in scaled [0, 1] input units (before mean/std normalisation), of
    pixels beyond the image or ROI edge that a border region reads (0: black, e.g. SAR; 1:
    white, brightfield slides). Tokens whose patch lies wholly in that padding are left out of
    the context (see :mod:`xt_engine.runtime.schedule`).

    ``pixel_size`` / ``pixel_unit``: the physical size of a pixel the model was trained at
    (e.g. 0.5 micrometer, 10 meter), or None (pixel-based). ``xt infer`` then runs at the
    image's pyramid level closest to it, resampled when none is within 10%
    (:mod:`xt_engine.runtime.resolution`).
    """

    region_size: int = 256
    overlap: int = 0
    pad_value: float = 0.0
    pixel_size: float | None = None
    pixel_unit: str | None = None

    def validate(self) -> None:
        if self.region_size < 32 or self.region_size % 32:
            raise ConfigError(
                f"tiling.region_size={self.region_size} is not a positive multiple of 32",
                "use 256 or 512",
            )
        if not 0.0 <= self.pad_value <= 1.0:
            raise ConfigError(
                f"tiling.pad_value={self.pad_value} is not in [0, 1] (scaled input units)",
                "use 0 (black, SAR) or 1 (white, brightfield)",
            )
        if not 0 <= self.overlap < self.region_size // 2:
            raise ConfigError(
                f"tiling.overlap={self.overlap} must be in [0, region_size/2)",
                "use 0 or a small margin such as 32",
            )
        if self.pixel_size is not None and not (
            self.pixel_size > 0 and self.pixel_unit in PIXEL_UNITS
        ):
            raise ConfigError(
                f"tiling.pixel_size={self.pixel_size} {self.pixel_unit} is not a positive size "
                "in a known unit",
                f"give pixel_size > 0 and pixel_unit, one of {', '.join(PIXEL_UNITS)}",
            )


@dataclass
class RegionEncoderConfig:
    """A timm backbone used with ``features_only=True``.

    ``weights`` names a local timm state-dict file (.safetensors/.pth/.bin) or is None (random
    init). ``input_scaling`` maps raw pixels to [0, 1] before ``mean``/``std`` normalisation:
    ``auto`` divides by the dtype's maximum (uint8 -> 255, uint16 -> 65535, float unchanged);
    ``db`` (SAR backscatter in dB, float images only) maps ``input_range`` (default
    ``DB_RANGE``, -30 .. 10 dB) linearly to [0, 1]. ``input_scale`` (a number) replaces the
    factor: scaled = raw x input_scale, e.g. 1e-4 for reflectance stored as DN = 10000 x
    reflectance. ``input_range`` (lo, hi) maps lo -> 0 and hi -> 1 for any scaling (values
    outside are kept, not clipped). ``input_dtype``: the pixel type the model was trained on
    (e.g. "uint16"); an image of another type is refused. ``modality``: ``brightfield``
    (dark tissue on white glass: ``tiling.pad_value`` 1, Otsu foreground), ``fluorescence``
    (bright signal on black: pad 0, every region runs), ``sar`` / ``optical`` (scenes: pad 0,
    regions with data run), ``any`` (no assumption). See :mod:`xt_engine.runtime.input_values`.
    """

    name: str = "convnext_atto"
    in_chans: int = 3
    weights: str | None = None
    input_scaling: str = "auto"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_scale: float | None = None
    input_range: tuple[float, float] | None = None
    input_dtype: str | None = None
    modality: str = "any"

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
        self._validate_values()
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) not in (1, self.in_chans):
                raise ConfigError(
                    f"region_encoder.{name} has {len(value)} values for {self.in_chans} channels",
                    "give one value or one per channel",
                )

    def _validate_values(self) -> None:
        lo, hi = self.input_range or (0.0, 1.0)
        choices = {"input_dtype": (None, *INPUT_DTYPES), "modality": MODALITIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"region_encoder.{name}={getattr(self, name)!r} is unknown",
                    f"use one of {', '.join(str(a) for a in allowed if a)}",
                )
        if self.input_scale is not None and (
            not self.input_scale > 0 or self.input_range is not None
        ):
            raise ConfigError(
                f"region_encoder.input_scale={self.input_scale} is not a positive factor or "
                "comes with an input_range",
                "give input_scale > 0 (e.g. 1e-4) or input_range, not both",
            )
        if not lo < hi:
            raise ConfigError(
                f"region_encoder.input_range={self.input_range} is empty", "give (lo, hi), lo < hi"
            )


@dataclass
class HeadConfig:
    """The task head. Class 0 is background for segmentation.

    ``pool`` (classification): ``mean`` of all contextualised tokens, or ``cls``, a learned token
    run through the context encoder after the last region (the released xT layout; for
    whole-sequence models it is appended to the same call as the regions' tokens).
    ``detection_threshold``: minimum centre score of a decoded detection;
    ``max_detections``: the most detections decoded per region; ``fusion_level``
    (segmentation): the feature level the head fuses the context on (0: the finest; 1 runs its
    convolutions on 4x fewer pixels, but loses small objects: -0.17 vessel macro-F1 on the
    demo-sar recipe, docs/benchmarks.md); ``border_iou``: two
    detections of one class from neighbouring regions whose boxes overlap by more than this
    IoU are one object straddling the border, reported once, by the earlier region in raster
    order (:class:`xt_engine.tasks.detection.BorderSuppression`).
    """

    task: str = "segmentation"
    num_classes: int = 2
    class_names: tuple[str, ...] | None = None
    class_colors: tuple[str, ...] | None = None
    decoder_dim: int = 64
    fusion_level: int = 0
    pool: str = "mean"
    detection_threshold: float = 0.3
    max_detections: int = 100
    border_iou: float = 0.3

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
        if self.fusion_level < 0 or (self.fusion_level and self.task != "segmentation"):
            raise ConfigError(
                f"head.fusion_level={self.fusion_level} is not available for a "
                f"{self.task} head",
                "use fusion_level 0, or 1 or more with a segmentation head",
            )
        if self.max_detections < 1:
            raise ConfigError(
                f"head.max_detections={self.max_detections} < 1", "use e.g. 100 per region"
            )
        if not 0.0 < self.border_iou <= 1.0:
            raise ConfigError(f"head.border_iou={self.border_iou} is not in (0, 1]", "use 0.3")
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
        context = self.context_encoder
        if context.bidirectional is None:  # both directions for dense tasks (see its docstring)
            context.bidirectional = context.kind != "none" and self.head.task != "classification"
        self.validate()

    def validate(self) -> None:
        self.tiling.validate()
        self.region_encoder.validate()
        self.context_encoder.validate()
        self.head.validate()
        modality, pad = self.region_encoder.modality, self.tiling.pad_value
        expected = {"brightfield": 1.0, "fluorescence": 0.0, "sar": 0.0, "optical": 0.0}
        if modality in expected and pad != expected[modality]:
            raise ConfigError(
                f"tiling.pad_value={pad} does not suit region_encoder.modality={modality!r}",
                f"set tiling.pad_value to {expected[modality]:g} for {modality} images",
            )

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
        kwargs: dict[str, Any] = {
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


__all__ = [
    "CONTEXT_KINDS",
    "ContextEncoderConfig",
    "HeadConfig",
    "RegionEncoderConfig",
    "TilingConfig",
    "XTConfig",
]
