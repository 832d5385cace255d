"""The one place napari-xt uses napari's private API, each use with a public fallback.

Only the live segmentation preview uses private names: while a run paints regions into a 2-D
numpy Labels layer, napari's own brush path (``Labels.data_setitem``) can send just the painted
block to the GPU. ``data_setitem`` itself is public but records every pixel in the undo history
(indices and old values: ~18 bytes per pixel, and Ctrl-Z would take predictions back), so the
preview calls the three private pieces it is made of:

- ``layer._slice.image.view``: the colour-mapped texture data of the displayed slice;
- ``layer.colormap._data_to_texture(values)``: label values -> that texture's values;
- ``layer._accumulate_updated_slice(block)`` / ``layer._partial_labels_refresh()``: mark a
  block changed, then upload the marked blocks (napari's ``labels_update`` event).

They are used only on a plain ``Labels`` object: napari hands plugin widgets a viewer whose
layers are wrapped in ``PublicOnlyProxy``, where private access warns (and is to be refused from
napari 0.10), and the plugin does not unwrap them. On such a layer, on one of another type or
shape, or on a napari without these names, the preview takes the public path,
:func:`redraw` ``(partial=False)``: ``layer.refresh(thumbnail=False, highlight=False,
extent=False)``, a full re-slice and upload without the layer-list thumbnail. Measured on 2
CPU cores with Mesa llvmpipe under Xvfb, one redraw including the canvas draw took 34-50 ms on
the partial path and 39-48 ms on the public one for a 1536-4096 px preview (with the thumbnail:
63-87 ms). ``tests/napari_xt/test_napari_private.py`` fails when napari renames these names or
changes their signatures, and checks the public path shows the painted data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels

# name -> parameters after self, as napari 0.9 defines them (checked by the tests)
LABELS_METHODS = {"_accumulate_updated_slice": ["updated_slice"], "_partial_labels_refresh": []}
COLORMAP_METHOD = ("_data_to_texture", ["values"])


def partial_updates(layer: Any) -> bool:
    """Whether ``layer`` takes partial texture updates: a plain (unproxied) 2-D numpy
    ``Labels`` object of a napari that has the private names above."""
    if not issubclass(type(layer), Labels):  # a PublicOnlyProxy passes isinstance, not this
        return False
    if layer.ndim != 2 or not isinstance(layer.data, np.ndarray):
        return False
    has = all(callable(getattr(layer, name, None)) for name in LABELS_METHODS)
    return has and callable(getattr(layer.colormap, COLORMAP_METHOD[0], None))


def mark_painted(layer: Any, y0: int, y1: int, x0: int, x1: int) -> bool:
    """Record that block ``[y0, y1) x [x0, x1)`` of the layer's data changed, for the next
    :func:`redraw` with ``partial=True`` to upload only that part of the texture. False where
    the layer does not take partial updates (see :func:`partial_updates`): redraw it whole."""
    if not partial_updates(layer):
        return False
    try:
        view = layer._slice.image.view
        if view.shape != layer.data.shape:
            return False
        block = np.s_[y0:y1, x0:x1]
        if layer.contour == 0:
            view[block] = layer.colormap._data_to_texture(layer.data[block])
        layer._accumulate_updated_slice(block)
    except (AttributeError, TypeError):
        return False
    return True


def redraw(layer: Any, partial: bool) -> None:
    """Show what was painted: the marked blocks (``partial``, after :func:`mark_painted`
    returned True for each), or the whole layer through the public API."""
    if partial:
        layer._partial_labels_refresh()
    else:
        layer.refresh(thumbnail=False, highlight=False, extent=False)
