"""Whether a batch image's store already holds this run's result, and what to do with it.

"This run" is what :meth:`xt_engine.store.result_store.OutputStore.resume` checks before it
continues a store (source, level, ROI, region size, overlap, number of regions, model config,
the determinants: context chunking, input scale, pad value, the weights' hash, the input's
fingerprint), computed with the same functions, plus the batch options that change a result
(:meth:`~xt_engine.batch.worker.RunOptions.result_options`, recorded as ``xt.batch.options``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xt_engine.errors import InputError

if TYPE_CHECKING:
    from xt_engine.batch.inputs import ImageTask
    from xt_engine.batch.worker import RunOptions
    from xt_engine.io import ImageSource
    from xt_engine.models import XTModel

_COMPARED = ("source", "level", "roi", "region_size", "overlap", "num_regions", "model_config")


def plan_image(
    task: ImageTask, model: XTModel, options: RunOptions
) -> tuple[ImageSource, int, tuple[int, int, int, int] | None]:
    """(source, level, roi in that level's pixels) as ``xt infer`` plans them: the input
    checked against the model, the level from the task, ``--level`` or the pixel size, the
    task's level-0 ROI moved to that level."""
    from xt_engine.io import open_image
    from xt_engine.runtime.input_values import check_inputs
    from xt_engine.runtime.resolution import plan_resolution
    from xt_engine.tiling import box_at_level

    opened = open_image(task.path)
    check_inputs(opened, model.config)
    planned = plan_resolution(
        opened,
        model.config.tiling,
        level=task.level if task.level is not None else options.level,
        pixel_size=options.pixel_size,
        pixel_unit=options.pixel_unit,
    )
    source, level = planned.source, planned.level
    if task.roi is None:
        return source, level, None
    h, w = opened.shape_yx(0)
    y0, x0, y1, x1 = task.roi
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise InputError(
            f"roi {y0} {x0} {y1} {x1} is empty or outside the image of {h} x {w} px",
            f"give level-0 pixels with 0 <= Y0 < Y1 <= {h} and 0 <= X0 < X1 <= {w}",
        )
    lh, lw = source.shape_yx(level)
    return source, level, box_at_level(task.roi, (h / lh, w / lw), (lh, lw))


def differing_field(
    xt: dict[str, Any],
    source: ImageSource,
    level: int,
    roi: tuple[int, int, int, int] | None,
    model: XTModel,
    options: RunOptions,
) -> str | None:
    """The first field in which the store's provenance ``xt`` differs from this run, or None."""
    from xt_engine.runtime.input_values import prepare_input
    from xt_engine.runtime.provenance import input_fingerprint, run_determinants
    from xt_engine.store.provenance import provenance
    from xt_engine.tiling import RegionGrid

    config = model.config
    grid = RegionGrid.for_image(
        source.shape_yx(level), config.tiling.region_size, roi, options.overlap
    )
    fresh = _json(provenance(source, level, grid, config, xt.get("label_levels", 0)))
    for key in _COMPARED:
        if xt.get(key) != fresh[key]:
            return key
    recorded = xt.get("determinants") or {}
    _, scale = prepare_input(source, config)
    determinants = run_determinants(model, scale) | {
        "input_fingerprint": input_fingerprint(source, level, grid)
    }
    for key, value in _json(determinants).items():
        if recorded.get(key) != value:
            return key
    batch = xt.get("batch") or {}
    if batch.get("options") != _json(options.result_options()):
        return "batch options" if batch else "batch options (written by xt infer)"
    return None


def decide(
    store: Path,
    source: ImageSource,
    level: int,
    roi: tuple[int, int, int, int] | None,
    model: XTModel,
    options: RunOptions,
    quiet: bool = False,
) -> str:
    """``skip``, ``resume`` (also for no store yet) or ``replace``; a complete store of another
    run without ``overwrite`` is an InputError naming the field (``quiet``: ``keep``)."""
    from xt_engine.store.safety import read_store_attrs

    xt = read_store_attrs(store) if store.is_dir() else None
    if xt is None:  # nothing there, or not ours: run_inference decides (and refuses)
        return "resume"
    ours = (xt.get("batch") or {}).get("run_id") == options.run_id
    if xt.get("complete", False):
        field = differing_field(xt, source, level, roi, model, options)
        if field is None and (ours or not options.overwrite):
            return "skip"
        if options.overwrite:
            return "replace"
        if quiet:
            return "keep"
        raise InputError(
            f"{store} holds a complete result of another run ({field} differs)",
            "add --overwrite to redo it, or choose another --out-dir",
        )
    return "replace" if options.overwrite and not ours else "resume"


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))
