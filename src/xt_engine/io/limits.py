"""Bounds on what an image header may make the readers allocate (issue 17: "allocations driven
by headers, not by the work").

Checked when an image is opened, before a pixel is read or a region grid is planned:

- **one tile / strip / chunk** decodes to at most ``XT_MAX_DECODE_MB`` MiB (environment
  variable; default :data:`DEFAULT_MAX_DECODE_MB`): a read decodes whole chunks, so a header
  naming a 10^6 x 10^6 px strip would ask for a 1 TB buffer. Uncompressed TIFF levels that are
  memory-mapped decode nothing and are not bounded. Raise the bound when the memory is there
  (``XT_MAX_DECODE_MB=4096 xt infer ...``), or re-save the image tiled;
- **the pixels a TIFF header claims** fit the data stored for them: compressed, at most
  :data:`MAX_COMPRESSION_RATIO` (2^20) times the bytes of level 0's tiles / strips (deflate
  stops near 1032:1, zstd near 32768:1, LERC on a constant float tile near 10^5:1);
  uncompressed, no more than those bytes (+ 1 MiB). A file of thousands of 200 MB strips of a
  few bytes each is refused here (one 152-byte strip claiming 10^6 x 10^6 px is already
  refused by the bound on one decode);
- **any image** has at most :data:`MAX_PIXELS` pixels per level-0 plane (2^44, 4.2 M x 4.2 M px:
  far beyond any slide or scene, and still a grid the engine can plan); a zarr header may
  claim any shape (missing chunks are legitimately the fill value), so this is its bound.

Each refusal is an :class:`~xt_engine.errors.InputError` naming the numbers and the fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

from xt_engine.errors import InputError

DECODE_ENV = "XT_MAX_DECODE_MB"
DEFAULT_MAX_DECODE_MB = 256
MAX_COMPRESSION_RATIO = 2**20
MAX_PIXELS = 2**44
_MIB = 1 << 20


def max_decode_bytes() -> int:
    """The bound on one decoded tile / strip / chunk, in bytes (``XT_MAX_DECODE_MB``)."""
    raw = os.environ.get(DECODE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_DECODE_MB * _MIB
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise InputError(  # (an InputError: the readers pass theirs through unchanged)
            f"{DECODE_ENV}={raw!r} is not a positive number of MiB",
            f"set {DECODE_ENV} to e.g. {DEFAULT_MAX_DECODE_MB * 4}, or unset it",
        )
    return int(value * _MIB)


def _mib(nbytes: int) -> str:
    return f"{nbytes / _MIB:,.0f} MiB" if nbytes >= _MIB else f"{nbytes} bytes"


def check_chunk(name: str, shape: Iterable[Any], itemsize: int, kind: str = "chunk") -> None:
    """Refuse a ``kind`` (tile, strip, chunk) of ``shape`` whose decoded size exceeds the bound."""
    dims = [int(n) for n in shape]
    nbytes = math.prod(dims) * int(itemsize)
    limit = max_decode_bytes()
    if nbytes > limit:
        raise InputError(
            f"{name}: one {kind} of {' x '.join(map(str, dims))} decodes to {_mib(nbytes)}, "
            f"above the {_mib(limit)} bound on one decode",
            f"re-save the image tiled (e.g. 512 x 512 tiles), or raise the bound with "
            f"{DECODE_ENV}=MIB if the memory is there",
        )


def check_pixels(name: str, shape_yx: tuple[Any, Any]) -> None:
    """Refuse a level-0 plane of more than :data:`MAX_PIXELS` pixels."""
    h, w = int(shape_yx[0]), int(shape_yx[1])
    if h * w > MAX_PIXELS:
        raise InputError(
            f"{name}: the header claims {h} x {w} px, beyond the {MAX_PIXELS:.3g} px any image "
            "read here may have (a damaged or crafted header)",
            "check the file; re-export the image",
        )


def check_stored(name: str, claimed: int, stored: int, compressed: bool) -> None:
    """Refuse a header whose ``claimed`` decoded bytes cannot come from ``stored`` bytes."""
    ratio = MAX_COMPRESSION_RATIO if compressed else 1
    if claimed > ratio * max(stored, 0) + _MIB:
        how = f"even at {ratio}:1 compression" if compressed else "uncompressed"
        raise InputError(
            f"{name}: the header claims {_mib(claimed)} of pixels but the file stores "
            f"{_mib(stored)} for them ({how}): a damaged or crafted header",
            "check the file; re-export the image",
        )


def check_tiff_levels(name: str, levels: list[Any]) -> None:
    """The bounds above for tifffile pyramid levels (series): every level's tiles or strips,
    and level 0's claimed size against its stored bytes."""
    for number, level in enumerate(levels):
        pages = [p for p in level.pages if p is not None]
        if not pages or level.dtype is None:
            continue
        page = level.keyframe if level.keyframe is not None else pages[0]
        itemsize = int(level.dtype.itemsize)
        if number == 0:
            iy, ix = level.axes.find("Y"), level.axes.find("X")
            if iy >= 0 and ix >= 0:
                check_pixels(name, (level.shape[iy], level.shape[ix]))
        compressed = int(page.compression) != 1  # uncompressed: bounded by the stored bytes
        if compressed:
            kind = "tile" if getattr(page, "is_tiled", False) else "strip"
            check_chunk(name, page.chunks, itemsize, kind)
        if number == 0:
            claimed = math.prod(int(n) for n in level.shape) * itemsize
            stored = sum(int(c) for p in pages for c in p.databytecounts)
            check_stored(name, claimed, stored, compressed)
