"""What part of an image the viewer shows, in the image's own pixels (no Qt).

The field of view comes from the camera (centre, zoom) and the canvas size, mapped into the
layer's data coordinates with ``world_to_data``; ``corner_pixels`` is not used because napari
expands it to the loaded chunks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xt_engine import InputError
from xt_engine.io import ImageSource
from xt_engine.tiling import box_at_level

SCOPES = ("Current view", "Whole image")
SHAPES_PREFIX = "Shapes: "


def view_box(viewer: Any, layer: Any, shape_yx: tuple[int, int]) -> tuple[int, int, int, int]:
    """The level-0 pixel box ``(y0, x0, y1, x1)`` of ``layer`` visible in ``viewer``, clipped
    to the image; the whole image when the view lies outside it."""
    height, width = viewer.canvas.size
    zoom = max(viewer.scene.camera.zoom, 1e-12)
    center = np.asarray(viewer.scene.camera.center[-2:], dtype=float)
    half = np.array([height, width], dtype=float) / zoom / 2
    corners = []
    for corner in (center - half, center + half):
        world = np.zeros(viewer.dims.ndim)
        world[-2:] = corner
        corners.append(np.asarray(layer.world_to_data(world))[-2:])
    lo, hi = np.minimum(*corners), np.maximum(*corners)
    y0, x0 = max(0, math.floor(lo[0])), max(0, math.floor(lo[1]))
    y1, x1 = min(shape_yx[0], math.ceil(hi[0]) + 1), min(shape_yx[1], math.ceil(hi[1]) + 1)
    if y0 >= y1 or x0 >= x1:
        return 0, 0, shape_yx[0], shape_yx[1]
    return y0, x0, y1, x1


def auto_level(viewer: Any, layer: Any, source: ImageSource) -> int:
    """The coarsest pyramid level that still has at least one pixel per screen pixel."""
    screen_per_pixel = viewer.scene.camera.zoom * float(np.min(layer.scale[-2:]))
    wanted = max(1.0, 1.0 / max(screen_per_pixel, 1e-12))
    best = 0
    for level in range(source.num_levels):
        if min(source.downsample(level)) <= wanted * 1.01:
            best = level
    return best


def labels_placement(layer: Any, downsample: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Scale and translate for a result computed at a level ``downsample`` times smaller than
    the image layer's level 0, so that pixel centres line up with the image."""
    scale = np.asarray(layer.scale[-2:], dtype=float) * np.asarray(downsample)
    translate = np.asarray(layer.translate[-2:], dtype=float) + (
        (np.asarray(downsample) - 1) / 2 * np.asarray(layer.scale[-2:], dtype=float)
    )
    return scale, translate


def result_units(layer: Any) -> dict[str, Any]:
    """``{"units": ...}`` for a 2-D result layer over the image ``layer``: its (y, x) units (a
    layer with other units makes napari drop units for every layer, with a warning); nothing
    for a napari without layer units (< 0.6)."""
    units = getattr(layer, "units", None)
    return {"units": tuple(units[-2:])} if units is not None and len(units) >= 2 else {}


def shapes_box(
    shapes: Any, layer: Any, shape_yx: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The level-0 pixel box of ``layer`` that bounds every shape of a Shapes layer (mapped
    through world coordinates, clipped to the image); None when there is no shape inside."""
    vertices = [np.asarray(v, dtype=float)[:, -2:] for v in shapes.data]
    if not vertices:
        return None
    points = np.concatenate(vertices)
    corners = []
    for corner in (points.min(axis=0), points.max(axis=0)):
        data = np.zeros(shapes.ndim)
        data[-2:] = corner
        world = np.asarray(shapes.data_to_world(data))
        full = np.zeros(layer.ndim)
        full[-2:] = world[-2:]
        corners.append(np.asarray(layer.world_to_data(full))[-2:])
    lo, hi = np.minimum(*corners), np.maximum(*corners)
    y0, x0 = max(0, math.floor(lo[0])), max(0, math.floor(lo[1]))
    y1, x1 = min(shape_yx[0], math.ceil(hi[0]) + 1), min(shape_yx[1], math.ceil(hi[1]) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, x0, y1, x1


def scope_roi(
    viewer: Any, scope: str, layer: Any, source: ImageSource, level: int
) -> tuple[int, int, int, int] | None:
    """The ROI of a widget scope (one of :data:`SCOPES` or ``SHAPES_PREFIX + name``) as a
    ``level`` pixel box, ``None`` for the whole image."""
    box0 = scope_box0(viewer, scope, layer, source)
    if box0 is None:
        return None
    return box_at_level(box0, source.downsample(level), source.shape_yx(level))


def scope_box0(
    viewer: Any, scope: str, layer: Any, source: ImageSource
) -> tuple[int, int, int, int] | None:
    """The ROI of a widget scope as a level-0 pixel box (``xt infer --roi``), ``None`` for the
    whole image (InputError for a Shapes layer with no shape over the image)."""
    if scope.startswith(SHAPES_PREFIX):
        name = scope.removeprefix(SHAPES_PREFIX)
        shapes = viewer.layers[name] if name in viewer.layers else None
        box0 = shapes_box(shapes, layer, source.shape_yx(0)) if shapes is not None else None
        if box0 is None:
            raise InputError(
                f"the Shapes layer {name!r} has no shape over the image",
                "draw a rectangle or polygon over the image, or pick another scope",
            )
        return box0
    if scope == SCOPES[0]:
        return view_box(viewer, layer, source.shape_yx(0))
    return None
