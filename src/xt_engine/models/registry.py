"""One registry of named model variants and one factory, in the manner of timm.

A variant is a small function returning the :class:`XTConfig` it stands for; ``create_model``
accepts such a name, an ``XTConfig`` or a plain dict and builds the composed :class:`XTModel`.
Tiny ``test_*`` variants live here too; the contract tests run over all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xt_engine.config import XTConfig
from xt_engine.errors import ConfigError
from xt_engine.models.context import build_context_encoder
from xt_engine.models.region_encoder import RegionEncoder
from xt_engine.models.xt_model import XTModel
from xt_engine.tasks import task_for

_REGISTRY: dict[str, Callable[[], XTConfig]] = {}


def register_model(fn: Callable[[], XTConfig]) -> Callable[[], XTConfig]:
    """Decorator: register ``fn`` under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "") -> list[str]:
    """Registered variant names containing ``pattern``, sorted."""
    return sorted(name for name in _REGISTRY if pattern in name)


def model_config(name: str) -> XTConfig:
    """The config of a registered variant."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"no registered model named {name!r}", f"use one of {', '.join(list_models())}"
        )
    return _REGISTRY[name]()


def create_model(spec: XTConfig | dict[str, Any] | str) -> XTModel:
    """Build an :class:`XTModel` from a config, a config dict or a registered name."""
    if isinstance(spec, str):
        config = model_config(spec)
    elif isinstance(spec, dict):
        config = XTConfig.from_dict(spec)
    elif isinstance(spec, XTConfig):
        config = spec
    else:
        raise ConfigError(
            f"cannot build a model from {type(spec).__name__}", "pass a config, dict or name"
        )
    region_encoder = RegionEncoder(config.region_encoder, config.tiling.region_size)
    context_encoder = build_context_encoder(config.context_encoder)
    task = task_for(config)
    head = task.build_head(
        config.head,
        config.context_encoder.dim,
        region_encoder.channels,
        config.tiling.region_size,
    )
    return XTModel(config, region_encoder, context_encoder, head, task)


def _config(
    backbone: str,
    kind: str,
    *,
    region_size: int = 256,
    in_chans: int = 3,
    dim: int = 128,
    depth: int = 2,
    num_classes: int = 2,
    class_names: tuple[str, ...] | None = None,
    class_colors: tuple[str, ...] | None = None,
    task: str = "segmentation",
    bidirectional: bool = False,
) -> XTConfig:
    return XTConfig.from_dict(
        {
            "tiling": {"region_size": region_size},
            "region_encoder": {"name": backbone, "in_chans": in_chans},
            "context_encoder": {
                "kind": kind,
                "dim": dim,
                "depth": depth,
                "bidirectional": bidirectional,
            },
            "head": {
                "task": task,
                "num_classes": num_classes,
                "class_names": class_names,
                "class_colors": class_colors,
            },
        }
    )


@register_model
def xt_demo_sar() -> XTConfig:
    """The demo model (trained by ``xt train --recipe demo-sar``; weights ship with the package):
    1-channel SAR, 128 px regions, tiny ConvNeXt, bidirectional Transformer-XL, 4 classes."""
    from xt_engine.train.recipes import DEMO_SAR

    return XTConfig.from_dict({k: v for k, v in DEMO_SAR.items() if k not in ("train", "data")})


@register_model
def xt_convnext_atto_txl() -> XTConfig:
    return _config("convnext_atto", "transformer_xl", dim=256)


@register_model
def xt_convnext_atto_hyper() -> XTConfig:
    return _config("convnext_atto", "hyper", dim=256)


@register_model
def xt_convnext_atto_mamba() -> XTConfig:
    return _config("convnext_atto", "mamba", dim=256)


@register_model
def xt_convnext_atto_sliding() -> XTConfig:
    return _config("convnext_atto", "sliding_window", dim=256)


@register_model
def xt_convnext_atto_none() -> XTConfig:
    """Region-only baseline for comparisons."""
    return _config("convnext_atto", "none", dim=256)


@register_model
def xt_swinv2_tiny_txl() -> XTConfig:
    return _config("swinv2_tiny_window8_256", "transformer_xl", dim=256)


@register_model
def xt_hiera_tiny_txl() -> XTConfig:
    return _config("hiera_tiny_224", "transformer_xl", dim=256)


# -- tiny variants for the contract tests (64 px regions, one context layer) -------------------
def _tiny(kind: str, backbone: str = "test_convnext", **kw: Any) -> XTConfig:
    return _config(backbone, kind, region_size=64, dim=32, depth=1, num_classes=3, **kw)


@register_model
def test_convnext_none() -> XTConfig:
    return _tiny("none")


@register_model
def test_convnext_txl() -> XTConfig:
    return _tiny("transformer_xl")


@register_model
def test_convnext_hyper() -> XTConfig:
    return _tiny("hyper")


@register_model
def test_convnext_mamba() -> XTConfig:
    return _tiny("mamba")


@register_model
def test_convnext_sliding() -> XTConfig:
    return _tiny("sliding_window")


@register_model
def test_convnext_txl_bidir() -> XTConfig:
    return _tiny("transformer_xl", bidirectional=True)


@register_model
def test_convnext_txl_det() -> XTConfig:
    return _tiny("transformer_xl", task="detection")


@register_model
def test_convnext_txl_cls() -> XTConfig:
    return _tiny("transformer_xl", task="classification")


@register_model
def test_vit_txl() -> XTConfig:
    return _tiny("transformer_xl", backbone="test_vit")
