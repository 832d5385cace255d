"""Sample data contributed through the manifest (no Qt needed)."""

from __future__ import annotations

from typing import Any

from napari_xt._layers import label_layer_kwargs
from xt_engine.config import HeadConfig
from xt_engine.synthetic import SAR_CLASS_COLORS, SAR_CLASS_NAMES, make_sar_scene


def sar_scene(size: int = 2048, seed: int = 0) -> list[tuple[Any, dict[str, Any], str]]:
    """A synthetic SAR scene (uint8) and its ground-truth classes as a hidden Labels layer."""
    image, mask = make_sar_scene((size, size), seed=seed)
    head = HeadConfig(
        num_classes=len(SAR_CLASS_NAMES), class_names=SAR_CLASS_NAMES, class_colors=SAR_CLASS_COLORS
    )
    truth = {"name": "ground truth", "opacity": 0.6, "visible": False, **label_layer_kwargs(head)}
    return [
        (image, {"name": "synthetic SAR scene", "colormap": "gray"}, "image"),
        (mask, truth, "labels"),
    ]
