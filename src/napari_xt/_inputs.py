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

A layer this plugin's reader opened from a file runs on the engine's own source of that file
(:func:`file_source`: nodata, georeference, pixel size and channel names kept), other layers on
their arrays. :func:`model_plan` is the engine's level choice at the model's pixel size.

napari's builtin readers and napari-ome-zarr open a multichannel image as one layer per channel;
:func:`stacked_source` puts such layers back together, lazily (``dask.array.stack`` per pyramid
level: a region read slices only its box of each layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xt_engine.errors import InputError, XTError
from xt_engine.io import ImageSource, open_image, source_from_arrays
from xt_engine.io.array import guess_axes

if TYPE_CHECKING:
    from xt_engine.config import TilingConfig
    from xt_engine.models import XTModel
    from xt_engine.runtime.resolution import ResolutionPlan

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
    """The input of a run on ``layer`` alone: the engine's source of its file when this
    plugin's reader opened it (:func:`file_source`), else its arrays (with the reader's channel
    names, if any)."""
    opened = file_source(layer)
    if opened is not None:
        return opened
    source = source_from_arrays(layer_levels(layer), layer_axes(layer), name=layer.name)
    names = (layer.metadata or {}).get(LAYER_META, {}).get("channel_names")
    if isinstance(names, list) and len(names) == source.num_channels:
        source.channel_names = [str(n) for n in names]
    return source


def file_source(layer: Any) -> ImageSource | None:
    """``open_image`` of the file this plugin's reader made ``layer`` from (its nodata,
    georeference, pixel size, channel names and format, as ``xt infer`` sees them); None for
    layers of other readers, when the file cannot be opened any more, or when its levels
    (y, x shapes and channels) are no longer the layer's."""
    path = (layer.metadata or {}).get(LAYER_META, {}).get("path")
    if not isinstance(path, str):
        return None
    try:
        source = open_image(path)
        axes = layer_axes(layer)
        channels = layer_channels(layer)
    except XTError:
        return None
    y, x = axes.index("y") - len(axes), axes.index("x") - len(axes)
    shapes = [(int(lvl.shape[y]), int(lvl.shape[x])) for lvl in layer_levels(layer)]
    mine = [tuple(source.shape_yx(k)) for k in range(source.num_levels)]
    return source if mine == shapes and source.num_channels == channels else None


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


def model_plan(source: ImageSource, tiling: TilingConfig | None) -> ResolutionPlan | None:
    """The engine's level for a run at the model's training pixel size, as ``xt infer``
    without ``--level`` / ``--mpp`` picks it (:func:`~xt_engine.runtime.resolution.
    plan_resolution`: the closest level, or a resampled one); None when the model or the image
    states no pixel size, or their units do not compare (metres against degrees)."""
    from xt_engine.runtime.resolution import convert, plan_resolution

    if tiling is None or tiling.pixel_size is None or source.pixel_size is None:
        return None
    if convert(tiling.pixel_size, tiling.pixel_unit, source.unit) is None:
        return None
    return plan_resolution(source, tiling)


UNIT_SYMBOLS = {"nanometer": "nm", "micrometer": "µm", "millimeter": "mm", "meter": "m"}


def pixel_text(size: float | None, unit: str | None) -> str:
    """``0.5 µm``, ``10 m``, ``0.0001 degree``; empty without a size."""
    if size is None:
        return ""
    from xt_engine.runtime.resolution import canonical_unit

    name = canonical_unit(unit) or unit or ""
    return f"{size:.3g} {UNIT_SYMBOLS.get(name, name)}".strip()


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
