"""Layer styling shared by the widget and the sample data (no Qt imports)."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from xt_engine.colors import class_colors
from xt_engine.config import HeadConfig


def label_layer_kwargs(head: HeadConfig) -> dict[str, Any]:
    """Labels layer keyword arguments: one colour per class and a ``class`` feature (shown on hover)."""
    colors = np.asarray(class_colors(head), dtype=np.float32) / 255.0
    color_dict: dict[int | None, np.ndarray] = {i: c for i, c in enumerate(colors)}
    color_dict[None] = np.zeros(4, dtype=np.float32)
    names = list(head.names())
    return {
        "colormap": DirectLabelColormap(color_dict=color_dict),
        "features": {"index": list(range(len(names))), "class": names},
    }
