"""Sample data contributed through the manifest (no Qt needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xt._layers import label_layer_kwargs
from napari_xt._threads import call_in_fresh_thread
from xt_engine.config import HeadConfig
from xt_engine.synthetic import SAR_CLASS_COLORS, SAR_CLASS_NAMES, make_sar_scene


def sar_scene(size: int = 2048, seed: int = 0) -> list[tuple[Any, dict[str, Any], str]]:
    """A synthetic SAR scene (uint8) and its ground-truth classes as a hidden Labels layer."""
    # the scene generator interpolates with torch: not on the GUI thread (see _threads)
    image, mask = call_in_fresh_thread(make_sar_scene, (size, size), seed=seed)
    head = HeadConfig(
        num_classes=len(SAR_CLASS_NAMES), class_names=SAR_CLASS_NAMES, class_colors=SAR_CLASS_COLORS
    )
    truth = {"name": "ground truth", "opacity": 0.6, "visible": False, **label_layer_kwargs(head)}
    return [
        (image, {"name": "synthetic SAR scene", "colormap": "gray"}, "image"),
        (mask, truth, "labels"),
    ]


def sar_scene_with_results(
    size: int = 2048, seed: int = 0
) -> list[tuple[Any, dict[str, Any], str]]:
    """The synthetic SAR scene, its ground truth and the bundled demo model's segmentation."""
    from xt_engine import RegionDone, XTModel, run_inference
    from xt_engine.weights.loading import load_model

    layers = sar_scene(size, seed)
    image = layers[0][0]
    result = np.zeros(image.shape, dtype=np.uint8)

    def segment() -> XTModel:  # torch work stays off the GUI thread (see _threads)
        model = load_model("xt_demo_sar")
        for event in run_inference(image, model, batch_size=16):
            if isinstance(event, RegionDone) and event.labels is not None:
                r = event.region
                result[r.y0 : r.y1, r.x0 : r.x1] = event.labels
        return model

    model = call_in_fresh_thread(segment)
    seg = {
        "name": "xT segmentation (demo model)",
        "opacity": 0.6,
        **label_layer_kwargs(model.config.head),
    }
    return [*layers, (result, seg, "labels")]
