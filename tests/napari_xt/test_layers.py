"""Partial texture updates of the segmentation preview (no viewer needed)."""

from __future__ import annotations

import warnings

import numpy as np
from napari.layers import Labels
from napari.utils._proxies import PublicOnlyProxy

from napari_xt._napari_private import mark_painted


def test_mark_painted_updates_only_the_block_of_the_texture() -> None:
    layer = Labels(np.zeros((8, 8), np.uint8))
    layer.data[2:4, 1:3] = 1
    assert mark_painted(layer, 2, 4, 1, 3)
    view = layer._slice.image.view
    expected = layer.colormap._data_to_texture(layer.data)
    np.testing.assert_array_equal(view[2:4, 1:3], expected[2:4, 1:3])


def test_mark_painted_refuses_a_proxied_layer_without_warning() -> None:
    """A plugin's viewer hands out proxied layers; private access on them warns (an error under
    this project's warning filters), so the caller falls back to a whole-layer refresh."""
    proxied = PublicOnlyProxy(Labels(np.zeros((8, 8), np.uint8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mark_painted(proxied, 0, 2, 0, 2) is False
