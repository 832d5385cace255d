"""Models: region encoders (timm), context encoders, heads, the composed XTModel, the registry."""

from xt_engine.models.registry import create_model, list_models, model_config, register_model
from xt_engine.models.xt_model import RegionOutputs, XTModel, XTState

__all__ = [
    "RegionOutputs",
    "XTModel",
    "XTState",
    "create_model",
    "list_models",
    "model_config",
    "register_model",
]
