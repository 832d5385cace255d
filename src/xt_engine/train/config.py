"""The ``train`` section of a training config file (JSON or YAML), as a typed dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from xt_engine.errors import ConfigError


@dataclass
class TrainConfig:
    """Training hyper-parameters.

    ``crop_size`` px squares (a multiple of the region size; an image smaller than a crop is
    used whole, zero-padded) are cut from the training images, ``positive_ratio`` of them
    centred on a labelled pixel of a rare class. The context runs over a crop's regions in the
    chunks inference uses (the model's ``context_encoder.chunk_regions``) with the state
    carried *with* gradients unless ``truncate_context`` (then the state is detached between
    chunks). Each step shifts the
    crop's region grid positions by a random offset of up to ``position_jitter`` regions per
    axis, so the model sees the token positions of a whole large image (up to R x jitter px),
    not only those of one crop, and learns to use them relatively (0: no shift).
    ``context_aux_weight`` weighs the deep supervision of the context tokens
    (:mod:`xt_engine.train.context_probe`; 0: off; dense tasks with a context encoder only).
    ``augment``: random 90-degree rotations and flips of the crops; switch it off where the
    labels depend on direction ("the marker lies above"), which a rotation would break.
    ``balance_classes``: batches that mix images of the classes some images hold and others do
    not (:class:`~xt_engine.train.data.ClassBalancer`; where every image holds every class,
    images are drawn uniformly). Both are on by default, the probe at weight 0.1: the context
    task suite needs them (without them its context encoder learns none of its tasks), and at
    0.1 the demo-sar recipe keeps its vessel macro-F1 (weight 1 lost 0.028 over seeds 0-2;
    docs/benchmarks.md has the tables). The suite recipes (``--recipe context-*``) use both
    defaults; the demo-sar recipe states the options the bundled demo model was trained with
    (both off).
    """

    crop_size: int = 1024
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.05
    max_steps: int = 500
    warmup_steps: int = 20
    positive_ratio: float = 0.5
    dice_weight: float = 1.0
    class_weights: tuple[float, ...] | None = None
    truncate_context: bool = False
    grad_checkpointing: bool = False
    val_every: int = 100
    val_crops: int = 8
    seed: int = 0
    position_jitter: int = 256
    context_aux_weight: float = 0.1
    augment: bool = True
    balance_classes: bool = True

    def validate(self, region_size: int) -> None:
        if self.crop_size < region_size or self.crop_size % region_size:
            raise ConfigError(
                f"train.crop_size={self.crop_size} is not a multiple of the region size "
                f"{region_size}",
                f"use e.g. {4 * region_size}",
            )
        if self.position_jitter < 0:
            raise ConfigError("train.position_jitter must be >= 0", "use 0 to switch it off")
        for name in ("batch_size", "max_steps", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1", f"set train.{name} to 1 or more")
        if not 0.0 <= self.positive_ratio <= 1.0:
            raise ConfigError("train.positive_ratio must be in [0, 1]", "use e.g. 0.5")
        if self.context_aux_weight < 0:
            raise ConfigError("train.context_aux_weight must be >= 0", "use 0 to switch it off")
        if self.lr <= 0:
            raise ConfigError("train.lr must be > 0", "use e.g. 1e-3")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainConfig:
        data = dict(data or {})
        if "chunk_regions" in data:
            raise ConfigError(
                "train.chunk_regions is not a training setting: training and inference share "
                "the model's context chunks",
                "set context_encoder.chunk_regions in the model config instead",
            )
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError(
                f"unknown field(s) in train: {', '.join(sorted(unknown))}",
                f"valid fields are {', '.join(sorted(allowed))}",
            )
        clean: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
