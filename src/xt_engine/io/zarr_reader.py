"""Zarr arrays and OME-Zarr images (NGFF 0.4 on zarr v2, 0.5 on zarr v3; older layouts too).

An OME-Zarr image is a group whose attributes hold ``multiscales`` (NGFF <= 0.4, in ``.zattrs``)
or ``ome.multiscales`` (NGFF 0.5, in ``zarr.json``). The first multiscale is used: its
``datasets`` are the pyramid levels, largest first, at any path inside the group ("0", "s0",
"scale1/data", ...). ``axes`` name the dimensions (``tczyx``, ``cyx``, ``yxc``, ...); the
channel axis (name ``c`` or type ``channel``) becomes ``c``, ``y``/``x`` stay, and every other
axis (``t``, ``z``) must be singleton and is dropped. The level-0 ``scale`` transform (times the
multiscale-wide one, if any) gives ``pixel_size`` in the unit of the x axis.

A bioformats2raw container (image in subgroup "0") is followed; a plain zarr array, or a group
with exactly one array, opens with its axes guessed from the shape.

Malformed metadata is refused before any array is read, in one line naming the field
(:func:`_check_multiscale`): ``multiscales`` not a list of objects, ``datasets`` empty or not
a list, a dataset ``path`` missing from the store, axes not matching the arrays, a ``scale``
that is not a list of finite numbers > 0 (e.g. ``[0, -1]``) or not one value per axis, and an
NGFF version other than 0.1-0.5.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import zarr

from xt_engine.errors import InputError
from xt_engine.io.array import guess_axes
from xt_engine.io.limits import check_chunk, check_pixels
from xt_engine.io.source import ImageSource, SqueezedArray


def open_zarr(path: Path) -> ImageSource:
    """Open a zarr array or an OME-Zarr image group as an :class:`ImageSource`."""
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - zarr raises many types for a non-store
        raise InputError(
            f"{path} is not a zarr store ({type(err).__name__}: {err})",
            "pass an OME-Zarr directory (with zarr.json or .zattrs/.zgroup) or a zarr array",
        ) from err
    if isinstance(node, zarr.Array):
        return _bare(node, path.name)
    attrs: dict[str, Any] = dict(node.attrs)  # zarr types the values as JSON
    layout = "bioformats2raw.layout"
    ome = attrs.get("ome")
    if _multiscales(path, attrs) is None and (
        layout in attrs or (isinstance(ome, dict) and layout in ome)
    ):
        if "0" in node:  # bioformats2raw: the first image is group "0"
            image = node["0"]
            if not isinstance(image, zarr.Group):
                raise InputError(
                    f"{path} is a bioformats2raw container whose image 0 is not a group",
                    "re-export the image, or pass the path of the OME-Zarr image group inside",
                )
            node = image
            attrs = dict(node.attrs)
    multiscales = _multiscales(path, attrs)
    if multiscales is None:
        names = sorted(node.array_keys())
        if len(names) == 1:
            return _bare(node[names[0]], f"{path.name}/{names[0]}")
        raise InputError(
            f"{path} has no OME-Zarr multiscales metadata and {len(names)} arrays "
            f"({', '.join(names[:5]) or 'none'})",
            "pass an OME-Zarr image group, or the path of one array inside the store",
        )
    return _open_multiscale(path, node, multiscales, attrs)


#: the NGFF versions this reader knows (a version string starting with one of them, e.g. "0.5",
#: "0.4", "0.5-dev"); any other is refused rather than guessed at
KNOWN_VERSIONS = re.compile(r"0\.[1-5](?![0-9])")
_REEXPORT = "fix the multiscales metadata or re-export the image as OME-Zarr 0.4 or 0.5"


def _multiscales(path: Path, attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The first multiscale of ``attrs`` (NGFF 0.5 ``ome.multiscales`` or <= 0.4
    ``multiscales``), None when there is none; a value that is not a list of objects is an
    InputError."""
    ome = attrs.get("ome")
    holder = ome if isinstance(ome, dict) and "multiscales" in ome else attrs
    if "multiscales" not in holder:
        return None
    found = holder["multiscales"]
    if not isinstance(found, list) or not found or not isinstance(found[0], dict):
        raise InputError(
            f"{path}: multiscales metadata must be a non-empty list of objects, "
            f"not {_short(found)}",
            _REEXPORT,
        )
    return found[0]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_multiscale(path: Path, ms: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Refuse malformed multiscale metadata before any array is read (one line, the field)."""
    ome = attrs.get("ome")
    version = (ome.get("version") if isinstance(ome, dict) else None) or ms.get("version")
    if version is not None and not KNOWN_VERSIONS.match(str(version)):
        raise InputError(
            f"{path}: NGFF version {_short(version)} is not one this reader knows (0.1-0.5)",
            "re-export the image as OME-Zarr 0.4 or 0.5",
        )
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InputError(
            f"{path}: multiscales datasets must be a non-empty list, not {_short(datasets)}",
            _REEXPORT,
        )
    for i, dataset in enumerate(datasets):
        if not isinstance(dataset, dict) or not isinstance(dataset.get("path"), str):
            raise InputError(
                f"{path}: multiscales dataset {i} ({_short(dataset)}) has no path", _REEXPORT
            )
    axes = ms.get("axes")
    if axes is not None and not (
        isinstance(axes, list) and all(isinstance(a, dict | str) for a in axes)
    ):
        raise InputError(
            f"{path}: multiscales axes must be a list of objects, not {_short(axes)}", _REEXPORT
        )
    for where, holder in [("multiscales", ms)] + [
        (f"multiscales dataset {i}", d) for i, d in enumerate(datasets)
    ]:
        transforms = holder.get("coordinateTransformations")
        if transforms is None:
            continue
        if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
            raise InputError(
                f"{path}: {where} coordinateTransformations must be a list of objects, "
                f"not {_short(transforms)}",
                _REEXPORT,
            )
        for transform in transforms:
            if transform.get("type") != "scale":
                continue
            scale = transform.get("scale")
            numbers = isinstance(scale, list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in scale
            )
            if not numbers or not all(math.isfinite(v) and v > 0 for v in scale):
                raise InputError(
                    f"{path}: {where} scale {_short(scale)} is not a list of finite numbers > 0",
                    "give each axis its positive pixel size in the multiscales metadata, or "
                    "re-export the image",
                )


def _bare(array: Any, name: str) -> ImageSource:
    axes = guess_axes(array.shape)
    _bounded(name, [array], axes.index("y"), axes.index("x"))
    return ImageSource([array], axes, name=name, metadata={"format": "zarr"})


def _bounded(name: str, arrays: list[Any], iy: int, ix: int) -> None:
    """The header bounds of :mod:`xt_engine.io.limits`: level 0's pixels, every level's chunk
    (for a sharded array the inner chunk, the unit zarr decodes)."""
    check_pixels(name, (arrays[0].shape[iy], arrays[0].shape[ix]))
    for array in arrays:
        check_chunk(name, array.chunks, array.dtype.itemsize)


def _open_multiscale(path: Path, node: Any, ms: dict[str, Any], attrs: dict) -> ImageSource:
    _check_multiscale(path, ms, attrs)
    datasets = ms.get("datasets") or []
    arrays = []
    for dataset in datasets:
        try:
            arrays.append(node[dataset["path"]])
        except (KeyError, TypeError, FileNotFoundError) as err:
            raise InputError(
                f"{path}: multiscales dataset {dataset!r} is missing from the store",
                "fix the multiscales metadata or re-export the OME-Zarr image",
            ) from err
    if not arrays:
        raise InputError(f"{path}: multiscales lists no datasets", "re-export the OME-Zarr image")
    ndim = len(arrays[0].shape)
    axes = _axes(ms, ndim)
    if len(axes) != ndim or any(len(a.shape) != ndim for a in arrays):
        raise InputError(
            f"{path}: {len(axes)} axes in multiscales but arrays of shapes "
            f"{[tuple(a.shape) for a in arrays]}",
            "fix the multiscales axes or re-export the OME-Zarr image",
        )
    names = [a["name"] for a in axes]
    roles = _roles(path, axes)
    shape0 = arrays[0].shape
    extra = [f"{n}={shape0[i]}" for i, n in enumerate(names) if roles[i] is None and shape0[i] > 1]
    if extra:
        raise InputError(
            f"{path} has non-singleton axes {', '.join(extra)} (axes {''.join(names)})",
            "export a single 2-D plane (one time point and z-slice) with its channels",
        )
    keep = [i for i, r in enumerate(roles) if r is not None]
    index = tuple(slice(None) if i in keep else 0 for i in range(ndim))
    levels = [a if len(keep) == ndim else SqueezedArray(a, index) for a in arrays]
    iy, ix = roles.index("y"), roles.index("x")
    _bounded(path.name, arrays, iy, ix)
    scale = _scale(datasets[0], ndim)
    overall = _scale(ms, ndim)
    pixel_size = None
    if scale is not None or overall is not None:
        s = [a * b for a, b in zip(scale or [1.0] * ndim, overall or [1.0] * ndim, strict=True)]
        pixel_size = (float(s[iy]), float(s[ix]))
    unit = axes[ix].get("unit") or axes[iy].get("unit")
    version = (attrs.get("ome") or {}).get("version") or ms.get("version")
    return ImageSource(
        levels,
        "".join(r for r in roles if r is not None),  # the roles of `keep`, in order
        pixel_size,
        unit,
        path.name,
        metadata={"format": "ome-zarr", "ngff_version": version, "axes": "".join(names)},
    )


def _axes(ms: dict[str, Any], ndim: int) -> list[dict[str, Any]]:
    """Axes as dicts with a ``name`` (NGFF 0.3 lists plain names; <= 0.2 implies ``tczyx``)."""
    raw = ms.get("axes") or list("tczyx"[-ndim:] if ndim <= 5 else [])
    return [dict(a) if isinstance(a, dict) else {"name": str(a)} for a in raw]


def _roles(path: Path, axes: list[dict[str, Any]]) -> list[str | None]:
    """Per axis: "c", "y", "x", or None (an axis to drop)."""
    roles: list[str | None] = []
    for axis in axes:
        name, kind = str(axis.get("name", "")).lower(), axis.get("type")
        role = name if name in ("y", "x") else "c" if name == "c" or kind == "channel" else None
        roles.append(role if role not in roles else None)
    if "y" not in roles or "x" not in roles:
        raise InputError(
            f"{path}: axes {[a.get('name') for a in axes]} have no y and x",
            "name the spatial axes y and x in the multiscales metadata",
        )
    return roles


def _scale(holder: dict[str, Any], ndim: int) -> list[float] | None:
    """The ``scale`` of a coordinateTransformations list, or None when there is none."""
    for transform in holder.get("coordinateTransformations") or []:
        if transform.get("type") == "scale" and len(transform.get("scale") or []) == ndim:
            return [float(v) for v in transform["scale"]]
    return None
