"""What a run reads from napari layers: one Image layer, or single-channel layers stacked as the
channels of one input, as an :class:`~xt_engine.io.ImageSource` that copies nothing (no Qt).

Which axis of a layer holds the channels:

- an ``rgb`` layer: the last, ``(H, W, 3 | 4)``;
- a layer this plugin's reader made from a multichannel image that is not RGB (a 2-band SAR
  scene, a fluorescence stack): its ``metadata[LAYER_META]["axes"]``, ``"cyx"``: the channels are
  the first axis, which napari shows as a slider (the result layers span every slider position);
- a 2-D layer: none (one channel);
- any other 3-D layer: the first axis when it is small (<= 16; the engine's
  :func:`~xt_engine.io.array.guess_axes` with ``rgb=False``), else the last.

napari's builtin readers and napari-ome-zarr open a multichannel image as one layer per channel;
:func:`stacked_source` puts such layers back together, lazily (``dask.array.stack`` per pyramid
level: a region read slices only its box of each layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xt_engine.errors import InputError
from xt_engine.io import ImageSource, source_from_arrays
from xt_engine.io.array import guess_axes

if TYPE_CHECKING:
    from xt_engine.models import XTModel

LAYER_META = "napari_xt"  # the key of the reader's entry in ``layer.metadata``


def layer_levels(layer: Any) -> list[Any]:
    """The layer's pyramid levels, largest first (one for a plain layer)."""
    return list(layer.data) if layer.multiscale else [layer.data]


def layer_axes(layer: Any) -> str:
    """The engine's axes string of an Image layer's levels (see the module docstring)."""
    if layer.rgb:
        return "yxc"
    axes = (layer.metadata or {}).get(LAYER_META, {}).get("axes")
    if isinstance(axes, str) and len(axes) == layer.ndim:
        return axes
    return guess_axes(tuple(layer_levels(layer)[0].shape), rgb=False)


def layer_channels(layer: Any) -> int:
    """How many channels a run of ``layer`` alone reads."""
    axes = layer_axes(layer)
    return int(layer_levels(layer)[0].shape[axes.index("c")]) if "c" in axes else 1


def layer_source(layer: Any) -> ImageSource:
    """The input of a run on ``layer`` alone (its channel names from the reader, if any)."""
    source = source_from_arrays(layer_levels(layer), layer_axes(layer), name=layer.name)
    names = (layer.metadata or {}).get(LAYER_META, {}).get("channel_names")
    if isinstance(names, list) and len(names) == source.num_channels:
        source.channel_names = [str(n) for n in names]
    return source


def stackable(layer: Any, other: Any) -> bool:
    """Whether ``other`` can be stacked with ``layer`` as channels of one input: both are
    single-channel 2-D layers with the same pyramid level shapes and dtype."""
    if layer.rgb or other.rgb or layer.ndim != 2 or other.ndim != 2:
        return False
    mine, theirs = layer_levels(layer), layer_levels(other)
    return [tuple(a.shape) for a in mine] == [tuple(b.shape) for b in theirs] and np.dtype(
        mine[0].dtype
    ) == np.dtype(theirs[0].dtype)


def stacked_source(layers: Sequence[Any]) -> ImageSource:
    """Single-channel layers as the channels of one input, in the given order (axes ``cyx``,
    channel names = layer names). Lazy: level ``k`` is ``dask.array.stack`` of the layers'
    level ``k``, each wrapped as it is (numpy, zarr or dask), nothing read here."""
    import dask.array as da

    if len(layers) < 2:
        raise InputError("stacking needs two or more layers", "check two or more channels")
    first = layers[0]
    for other in layers[1:]:
        if not stackable(first, other):
            raise InputError(
                f"layer {other.name!r} cannot be stacked with {first.name!r}",
                "stack 2-D single-channel layers of the same size, pyramid and dtype",
            )
    per_layer = [layer_levels(layer) for layer in layers]
    levels = [
        da.stack([as_dask(channels[k]) for channels in per_layer]) for k in range(len(per_layer[0]))
    ]
    name = " + ".join(layer.name for layer in layers)
    source = source_from_arrays(levels, "cyx", name=name)
    source.channel_names = [layer.name for layer in layers]
    return source


def check_channels(source: ImageSource, model: XTModel) -> None:
    """Refuse an input whose channel count is not the model's (before a run starts)."""
    wanted = model.config.region_encoder.in_chans
    if source.num_channels != wanted:
        hint = (
            f"stack {wanted} single-channel layers in the Channels list, or pick a 1-channel model"
            if source.num_channels == 1
            else f"pick a model trained for {source.num_channels} channel(s), or another layer"
        )
        raise InputError(
            f"{source.name} has {source.num_channels} channel(s) but the model takes {wanted}",
            hint,
        )


def as_dask(level: Any) -> Any:
    """A lazy dask view of a numpy, zarr or dask array (zarr keeps its own chunks)."""
    import dask.array as da

    if isinstance(level, da.Array):
        return level
    chunks = getattr(level, "chunks", None)  # a zarr array: its own chunks
    if not (isinstance(chunks, tuple) and len(chunks) == len(level.shape)):
        chunks = (1024,) * len(level.shape)
    return da.from_array(level, chunks=chunks, asarray=False)
