"""Zarr and OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on zarr v3) image groups."""

from __future__ import annotations

from pathlib import Path

import zarr

from xt_engine.errors import InputError
from xt_engine.io.array import guess_axes
from xt_engine.io.source import ImageSource, SqueezedArray


def open_zarr(path: Path) -> ImageSource:
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - zarr raises many types for a non-store
        raise InputError(
            f"{path} is not a zarr store ({err})", "pass an OME-Zarr directory"
        ) from err
    if isinstance(node, zarr.Array):
        return ImageSource([node], guess_axes(node.shape), name=path.name)
    attrs = dict(node.attrs)
    multiscales = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
    if not multiscales:
        raise InputError(f"{path} has no OME-Zarr multiscales metadata", "pass an OME-Zarr image")
    ms = multiscales[0]
    names = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    datasets = ms["datasets"]
    arrays = [node[d["path"]] for d in datasets]
    if not names:
        names = list("tczyx"[-len(arrays[0].shape) :])
    keep = [i for i, n in enumerate(names) if n in ("c", "y", "x")]
    index = tuple(slice(None) if i in keep else 0 for i in range(len(names)))
    for array in arrays:
        if any(array.shape[i] != 1 for i in range(len(names)) if i not in keep):
            raise InputError(f"{path} has non-singleton t/z axes", "export a single 2-D plane")
    levels = [a if len(keep) == len(names) else SqueezedArray(a, index) for a in arrays]
    pixel_size = None
    for transform in datasets[0].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = transform["scale"]
            pixel_size = (float(scale[names.index("y")]), float(scale[names.index("x")]))
    unit = next(
        (a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict) and a.get("name") == "x"),
        None,
    )
    return ImageSource(levels, "".join(names[i] for i in keep), pixel_size, unit, path.name)
