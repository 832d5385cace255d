"""napari's private names the plugin still uses (src/napari_xt/_napari_private.py): this fails
loudly when napari renames them or changes their signatures; and the public fallback works."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
from napari.layers import Labels
from napari.utils._proxies import PublicOnlyProxy
from napari.utils.colormaps import CyclicLabelColormap, DirectLabelColormap

from napari_xt._napari_private import (
    COLORMAP_METHOD,
    LABELS_METHODS,
    mark_painted,
    partial_updates,
    redraw,
)


def _params(function) -> list[str]:
    return list(inspect.signature(function).parameters)[1:]  # after self


def test_the_private_names_exist_with_the_expected_signatures() -> None:
    for name, params in LABELS_METHODS.items():
        assert hasattr(Labels, name), f"napari's Labels lost {name}: update _napari_private"
        assert _params(getattr(Labels, name)) == params, f"Labels.{name} changed its signature"
    name, params = COLORMAP_METHOD
    for cls in (DirectLabelColormap, CyclicLabelColormap):
        assert _params(getattr(cls, name)) == params, f"{cls.__name__}.{name} changed"
    layer = Labels(np.zeros((4, 6), np.uint8))
    view = layer._slice.image.view  # the displayed texture data the partial path writes into
    assert isinstance(view, np.ndarray) and view.shape == (4, 6)
    assert partial_updates(layer)
    # the public fallback's keywords
    assert {"thumbnail", "highlight", "extent"} <= set(inspect.signature(Labels.refresh).parameters)


def test_the_partial_path_uploads_the_painted_block() -> None:
    layer = Labels(np.zeros((8, 8), np.uint8))
    layer.data[2:4, 1:3] = 3
    assert mark_painted(layer, 2, 4, 1, 3)
    redraw(layer, partial=True)
    np.testing.assert_array_equal(
        layer._slice.image.view, layer.colormap._data_to_texture(layer.data)
    )


def test_the_public_path_shows_the_painted_data_on_a_proxied_layer() -> None:
    """What a plugin widget gets from napari: no private access (it would warn), a whole redraw."""
    layer = Labels(np.zeros((8, 8), np.uint8))
    proxied = PublicOnlyProxy(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not partial_updates(proxied)
        proxied.data[2:4, 1:3] = 2
        assert mark_painted(proxied, 2, 4, 1, 3) is False
        redraw(proxied, partial=False)
    # (checked on the layer itself: what napari draws)
    np.testing.assert_array_equal(
        layer._slice.image.view, layer.colormap._data_to_texture(layer.data)
    )
    assert (layer._slice.image.view[2:4, 1:3] != layer._slice.image.view[0, 0]).all()


def test_layers_of_other_kinds_take_the_public_path() -> None:
    assert not partial_updates(Labels(np.zeros((2, 8, 8), np.uint8)))  # 3-D
    assert not partial_updates(np.zeros((8, 8), np.uint8))
