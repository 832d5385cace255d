"""The :class:`~xt_engine.runtime.events.RegionDone` events of one batch of model outputs."""

from __future__ import annotations

from xt_engine.models import RegionOutputs, XTModel
from xt_engine.runtime.blending import SeamBlender
from xt_engine.runtime.events import RegionDone
from xt_engine.tasks.detection import BorderSuppression
from xt_engine.tiling import Region


def region_events(
    model: XTModel,
    regions: list[Region],
    outputs: RegionOutputs,
    attention: bool,
    probabilities: bool = False,
    blender: SeamBlender | None = None,
    suppressor: BorderSuppression | None = None,
) -> list[RegionDone]:
    """Per-region results of one batch, cropped to each region's valid part: the task's
    (:meth:`xt_engine.tasks.Task.region_results`: segmentation labels / probabilities, blended
    with the earlier neighbours' predictions when a ``blender`` is given; detections, those
    already reported by an earlier neighbouring region dropped when a ``suppressor`` is) and
    the attention map of each region's tile when asked."""
    stride = model.region_size // model.token_grid[0]
    results = model.task.region_results(
        model,
        regions,
        outputs,
        probabilities=probabilities,
        blender=blender,
        suppressor=suppressor,
    )
    out = []
    m = regions[0].margin if regions else 0  # overlap: outputs are the centre tiles
    for i, (region, result) in enumerate(zip(regions, results, strict=True)):
        region_map = None
        if attention and outputs.attention is not None:
            t = m // stride
            region_map = outputs.attention[i].float().cpu().numpy()
            region_map = region_map[
                t : t + -(-region.height // stride), t : t + -(-region.width // stride)
            ]
        out.append(
            RegionDone(
                region,
                result.labels,
                region_map,
                stride if attention else 0,
                result.detections,
                result.probabilities,
            )
        )
    return out


__all__ = ["region_events"]
