"""NGFF 0.5 (OME-Zarr) attributes and the result store's single-scale float images."""

from __future__ import annotations

from typing import Any

import zarr

NGFF_VERSION = "0.5"
#: the lengths NGFF allows as a space axis unit (UDUNITS-2 names); any other unit (e.g. a
#: geographic CRS's "degree") is left out of the axes and kept in the ``xt`` provenance
SPACE_UNITS = tuple(
    "angstrom attometer centimeter decimeter exameter femtometer foot gigameter hectometer "
    "inch kilometer megameter meter micrometer mile millimeter nanometer parsec petameter "
    "picometer terameter yard yoctometer yottameter zeptometer zettameter".split()
)
ATTENTION_PATH = "attention"
PROBABILITIES_PATH = "probabilities"


def create_attention(
    root: zarr.Group,
    shape: tuple[int, int],
    stride: int,
    region_size: int,
    pixel: tuple[float, float],
    down: tuple[float, float],
    axes: list[dict[str, Any]],
) -> None:
    """A float16 image at token resolution (one pixel per token: ``stride`` level pixels)."""
    tokens = region_size // stride
    root.create_array(
        f"{ATTENTION_PATH}/0",
        shape=(-(-shape[0] // stride), -(-shape[1] // stride)),
        chunks=(tokens, tokens),
        dtype="float16",
        fill_value=0,
        dimension_names=("y", "x"),
    )
    scale = [pixel[0] * down[0] * stride, pixel[1] * down[1] * stride]
    root[ATTENTION_PATH].attrs["ome"] = single_scale("attention", axes, scale)


def create_probabilities(
    root: zarr.Group,
    shape: tuple[int, int],
    classes: int,
    tile: int,
    pixel: tuple[float, float],
    down: tuple[float, float],
    axes: list[dict[str, Any]],
) -> None:
    """Softmax class probabilities, float16 (K, y, x), one chunk (K, T, T) per output tile."""
    root.create_array(
        f"{PROBABILITIES_PATH}/0",
        shape=(classes, *shape),
        chunks=(classes, tile, tile),
        dtype="float16",
        fill_value=0,
        dimension_names=("c", "y", "x"),
    )
    scale = [1.0, pixel[0] * down[0], pixel[1] * down[1]]
    channel = {"name": "c", "type": "channel"}
    root[PROBABILITIES_PATH].attrs["ome"] = single_scale("probabilities", [channel, *axes], scale)


def single_scale(name: str, axes: list[dict[str, Any]], scale: list[float]) -> dict[str, Any]:
    """NGFF ``ome`` attributes of an image with one dataset, ``0``."""
    transform = [{"type": "scale", "scale": scale}]
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": transform}],
            }
        ],
    }


def space_axes(unit: str | None) -> list[dict[str, Any]]:
    """The ``y``, ``x`` axes, with ``unit`` when NGFF allows it (see ``SPACE_UNITS``)."""
    named = {"unit": unit} if unit in SPACE_UNITS else {}
    return [{"name": a, "type": "space", **named} for a in "yx"]
