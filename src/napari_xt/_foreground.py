"""The widget's Foreground choice as the engine's ``foreground`` spec (no Qt).

The choices are the engine's methods (``auto``, ``none``, ``otsu``, ``nodata``: see
:mod:`xt_engine.runtime.foreground`) and every Labels and Shapes layer of the viewer, as a
mask (nonzero = foreground) in the image layer's level-0 data coordinates, through world
coordinates (the layers' scale and translate; rotation, shear and affine are not followed):

- a Labels layer whose world extent is the image's (within half an image pixel) is handed to
  the engine as it is, lazily: level 0, or the coarsest pyramid level that still has
  ``MAX_MASK_PX`` px on its long side (the engine scales a mask to the image);
- any other Labels layer is sampled (nearest pixel centre) onto a grid of at most
  ``MAX_MASK_PX`` px on the long side; pixels outside the layer are background;
- a Shapes layer is rasterised with napari's ``Shapes.to_labels`` onto that grid.

Sampling and rasterising run in the run's worker (:meth:`MaskPlan.mask`), never on the GUI
thread: ``to_labels`` returns int64 (a 2048 px grid: 32 MiB, ~1 s on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xt_engine.errors import InputError
from xt_engine.runtime.foreground import METHODS

LABELS_PREFIX = "Labels: "
SHAPES_PREFIX = "Shapes: "
MAX_MASK_PX = 2048


def foreground_items(viewer: Any) -> list[str]:
    """The Foreground choices: the engine's methods, then the viewer's Labels and Shapes
    layers (the widget's own result layers are Labels too: they are listed, a mask is a mask)."""
    from napari.layers import Labels, Shapes

    items = list(METHODS)
    items += [LABELS_PREFIX + lyr.name for lyr in viewer.layers if isinstance(lyr, Labels)]
    items += [SHAPES_PREFIX + lyr.name for lyr in viewer.layers if isinstance(lyr, Shapes)]
    return items


@dataclass(frozen=True)
class MaskPlan:
    """What the worker turns into a mask: a snapshot of a Labels or Shapes layer and the map
    from its data coordinates to the image's level-0 pixels, ``image = data * scale + shift``
    per (y, x). ``levels``: the Labels layer's levels (largest first); ``shapes``: vertex
    arrays (N, 2) with their ``shape_types``."""

    name: str
    image_shape: tuple[int, int]
    scale: tuple[float, float]
    shift: tuple[float, float]
    levels: tuple[Any, ...] = ()
    shapes: tuple[np.ndarray, ...] = ()
    shape_types: tuple[str, ...] = ()

    def grid_shape(self) -> tuple[int, int]:
        """The sampled mask's shape: level 0's, at most ``MAX_MASK_PX`` on the long side."""
        h, w = self.image_shape
        factor = max(1.0, max(h, w) / MAX_MASK_PX)
        return max(1, round(h / factor)), max(1, round(w / factor))

    def mask(self) -> Any:
        """The engine's mask (runs in the worker; InputError when nothing is foreground)."""
        if self.shapes:
            mask = self._rasterised()
        elif self._aligned():
            return self._aligned_level()
        else:
            mask = self._sampled()
        if not mask.any():
            raise InputError(
                f"the layer {self.name!r} marks no foreground over the image",
                "draw or paint over the image, or pick another Foreground",
            )
        return mask

    def _aligned(self) -> bool:
        (h, w), (sy, sx), (ty, tx) = self.image_shape, self.scale, self.shift
        lh, lw = self.levels[0].shape[-2:]
        lo = (-0.5 * sy + ty, -0.5 * sx + tx)  # the layer's extent in image pixels
        hi = ((lh - 0.5) * sy + ty, (lw - 0.5) * sx + tx)
        want_lo, want_hi = (-0.5, -0.5), (h - 0.5, w - 0.5)
        return all(abs(a - b) <= 0.5 for a, b in zip(lo + hi, want_lo + want_hi, strict=True))

    def _aligned_level(self) -> Any:
        chosen = self.levels[0]
        for level in self.levels[1:]:
            if max(level.shape[-2:]) >= MAX_MASK_PX:
                chosen = level
        return _plane(chosen)

    def _sampled(self) -> np.ndarray:
        """Nearest sampling of the Labels layer at the grid's pixel centres."""
        from napari_xt._inputs import as_dask

        mh, mw = self.grid_shape()
        (h, w), base = self.image_shape, self.levels[0].shape[-2:]
        fy, fx = h / mh, w / mw
        level = self.levels[0]
        for candidate in self.levels[1:]:  # the coarsest level still finer than the grid
            dy = base[0] / candidate.shape[-2]
            if dy * abs(self.scale[0]) <= fy:
                level = candidate
        down = (base[0] / level.shape[-2], base[1] / level.shape[-1])
        indices = []
        for size, f, s, t, d, n in zip(
            (mh, mw), (fy, fx), self.scale, self.shift, down, level.shape[-2:], strict=True
        ):
            centres = (np.arange(size) + 0.5) * f - 0.5  # image level-0 pixels
            j0 = (centres - t) / s  # the layer's level-0 pixels
            j = np.round((j0 - (d - 1) / 2) / d).astype(np.int64)
            indices.append((j, (j >= 0) & (j < n)))
        (rows, row_ok), (cols, col_ok) = indices
        plane = as_dask(_plane(level))
        rows_in = np.clip(rows, 0, plane.shape[0] - 1)
        cols_in = np.clip(cols, 0, plane.shape[1] - 1)
        sampled = np.asarray(plane[rows_in][:, cols_in].compute()) != 0
        return sampled & row_ok[:, None] & col_ok[None, :]

    def _rasterised(self) -> np.ndarray:
        from napari.layers import Shapes

        mh, mw = self.grid_shape()
        (h, w) = self.image_shape
        f = np.array([h / mh, w / mw])
        scale, shift = np.asarray(self.scale), np.asarray(self.shift)
        vertices = [((v * scale + shift) + 0.5) / f - 0.5 for v in self.shapes]
        layer = Shapes(vertices, shape_type=list(self.shape_types))
        return np.asarray(layer.to_labels(labels_shape=(mh, mw))) != 0


def _plane(level: Any) -> Any:
    """The last two axes of a level (the first position of any leading axis)."""
    while len(level.shape) > 2:
        level = level[0]
    return level


def foreground_spec(viewer: Any, choice: str, image: Any, shape0: tuple[int, int]) -> object:
    """The engine's ``foreground`` for a choice: a method name, or a :class:`MaskPlan` of the
    named layer mapped onto ``image`` (an Image layer whose level 0 is ``shape0`` (H, W))."""
    from napari_xt._inputs import layer_levels

    if choice in METHODS:
        return choice
    kind = "Labels" if choice.startswith(LABELS_PREFIX) else "Shapes"
    name = choice.removeprefix(LABELS_PREFIX).removeprefix(SHAPES_PREFIX)
    layer = viewer.layers[name] if name in viewer.layers else None
    from napari.layers import Labels, Shapes

    if layer is None or not isinstance(layer, Labels if kind == "Labels" else Shapes):
        raise InputError(f"the {kind} layer {name!r} is gone", "pick another Foreground")
    s_img = np.asarray(image.scale[-2:], dtype=float)
    t_img = np.asarray(image.translate[-2:], dtype=float)
    s_lyr = np.asarray(layer.scale[-2:], dtype=float)
    t_lyr = np.asarray(layer.translate[-2:], dtype=float)
    scale = (float(s_lyr[0] / s_img[0]), float(s_lyr[1] / s_img[1]))
    shift = (float((t_lyr[0] - t_img[0]) / s_img[0]), float((t_lyr[1] - t_img[1]) / s_img[1]))
    common: dict[str, Any] = {"name": name, "image_shape": shape0}
    if kind == "Labels":
        return MaskPlan(**common, scale=scale, shift=shift, levels=tuple(layer_levels(layer)))
    shapes = tuple(np.array(v, dtype=float)[:, -2:] for v in layer.data)  # copies
    if not shapes:
        raise InputError(f"the Shapes layer {name!r} has no shape", "draw one, or pick another")
    types = tuple(str(t) for t in layer.shape_type)
    return MaskPlan(**common, scale=scale, shift=shift, shapes=shapes, shape_types=types)
