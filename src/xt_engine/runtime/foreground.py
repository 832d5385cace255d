"""Which regions a run encodes: the foreground (tissue, data) of the image, region by region.

``xt infer --foreground auto|none|otsu|nodata|MASK`` (``run_inference(foreground=...)``):

* ``none``: every region runs.
* ``otsu`` (brightfield slides): tissue is darker than the glass. Grey values (the channel
  mean) are sampled on a low pyramid level, at most ``SAMPLES`` x ``SAMPLES`` per region; the
  threshold is Otsu's over all samples; a region runs when at least ``MIN_FRACTION`` of its
  samples are tissue.
* ``nodata`` (scenes): a pixel has no data when it is NaN or infinite in any channel, or
  equal to the image's nodata value in every channel, or, when the image states no nodata
  value, zero in every channel (the empty border of a scene; with ``auto``, only for
  georeferenced scenes). A region runs when any pixel of its cell on the low level has data.
* ``auto``: ``otsu`` for brightfield slides (RGB(A) uint8 with a micrometre pixel size or from
  a slide format, no georeference); ``nodata`` for scenes (georeferenced, or with a nodata
  value) and float images (NaN); ``none`` for everything else (photos, plain images).
  Whole-sequence models (xT's image-wide layout) always run every region.
* ``MASK``: a mask image (a path ``open_image`` reads, or an array), nonzero = foreground,
  covering the whole image at any resolution (scaled to it); a region runs when its cell holds
  any foreground.

The low level is the coarsest pyramid level on which a region still spans ``SAMPLES`` px (the
run's own level when the image has no coarser one); it is read in bands of region rows, so
memory stays bounded by one band. Skipped regions are not encoded and the context never sees
them; the regions that run keep their grid positions (see :mod:`.schedule`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xt_engine.errors import InputError
from xt_engine.io import ImageSource, open_image
from xt_engine.tiling import RegionGrid

METHODS = ("auto", "none", "otsu", "nodata")
SAMPLES = 16  # samples per region side on the low level
MIN_FRACTION = 0.01  # tissue samples a region needs to run (otsu)
BAND_PIXELS = 2**24  # low-level pixels read at once


@dataclass(frozen=True)
class Foreground:
    """The regions of ``grid`` a run encodes.

    Attributes:
        method: ``none``, ``otsu``, ``nodata`` or ``mask``.
        run: (len(grid),) bool, True for the regions that run.
        details: how it was decided (the low level, Otsu's threshold, the mask's path).
    """

    method: str
    run: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> list[int]:
        """Grid indices of the regions that run, in raster order."""
        return [int(i) for i in np.flatnonzero(self.run)]

    @property
    def skipped(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.run)]

    @property
    def digest(self) -> str:
        """SHA-256 of the method and the region mask (a run determinant)."""
        bits = np.packbits(self.run.astype(bool)).tobytes()
        return hashlib.sha256(self.method.encode() + b"\0" + bits).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "regions_run": int(self.run.sum()),
            "regions_skipped": int((~self.run).sum()),
            **self.details,
        }


def foreground_regions(
    source: ImageSource, level: int, grid: RegionGrid, spec: object = "auto"
) -> Foreground:
    """The regions to run for ``spec`` (a method name, a mask path, an array or an
    ImageSource); see the module docstring. Raises InputError for an unknown method, an
    unreadable mask, or when no region has foreground."""
    if isinstance(spec, str) and spec in METHODS:
        method = spec
    elif isinstance(spec, str) and not _looks_like_path(spec):
        raise InputError(
            f"--foreground {spec!r} is neither a method nor a mask file",
            f"use one of {', '.join(METHODS)} or the path of a mask image",
        )
    else:
        method = "mask"
    zero_empty = method == "nodata"
    if method == "auto":
        method = auto_method(source)
        zero_empty = source.georeference is not None
    if method == "none":
        return Foreground("none", np.ones(len(grid), dtype=bool))
    if method == "mask":
        result = _mask_regions(spec, source, level, grid)
    else:
        result = _measured_regions(method, source, level, grid, zero_empty)
    if not result.run.any():
        what = "tissue" if method == "otsu" else "pixels with data" if method == "nodata" else (
            "foreground in the mask"
        )
        raise InputError(
            f"no region of {source.name} holds {what} (foreground method {method})",
            "check the image (and its nodata value) or the mask, or pass --foreground none",
        )
    return result


SLIDE_FORMATS = ("openslide", "dicom", "svs", "ndpi", "scn")


def auto_method(source: ImageSource) -> str:
    """The method ``auto`` takes for ``source`` (see the module docstring)."""
    slide = source.metadata.get("format") in SLIDE_FORMATS or (
        source.pixel_size is not None and source.unit in ("micrometer", "µm", "um")
    )
    if source.dtype == np.uint8 and source.num_channels in (3, 4) and slide:
        if source.georeference is None:
            return "otsu"
    if source.georeference is not None or source.nodata is not None:
        return "nodata"
    return "nodata" if np.issubdtype(source.dtype, np.floating) else "none"


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "." in spec


def _low_level(source: ImageSource, level: int, region_size: int) -> int:
    """The coarsest level on which a region of ``level`` still spans ``SAMPLES`` px."""
    base = source.downsample(level)[0]
    best = level
    for k in range(level, source.num_levels):
        if region_size * base / source.downsample(k)[0] >= SAMPLES:
            best = k
    return best


def _cell_bounds(grid: RegionGrid, factor: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Each grid row's / column's output-tile span on the low level: (rows, 2), (cols, 2)."""
    fy, fx = factor
    rows = np.array([grid.region(r * grid.cols).y0 for r in range(grid.rows)])
    cols = np.array([grid.region(c).x0 for c in range(grid.cols)])
    heights = np.array([grid.region(r * grid.cols).height for r in range(grid.rows)])
    widths = np.array([grid.region(c).width for c in range(grid.cols)])
    ys = np.stack([np.floor(rows / fy), np.ceil((rows + heights) / fy)], axis=1).astype(int)
    xs = np.stack([np.floor(cols / fx), np.ceil((cols + widths) / fx)], axis=1).astype(int)
    return ys, xs


def _bands(grid: RegionGrid, ys: np.ndarray, width: int) -> list[range]:
    """Groups of grid rows whose low-level band holds at most ``BAND_PIXELS`` pixels."""
    bands, start = [], 0
    for r in range(1, grid.rows + 1):
        if r == grid.rows or (ys[r, 1] - ys[start, 0]) * width > BAND_PIXELS:
            bands.append(range(start, r))
            start = r
    return bands


def _measured_regions(
    method: str, source: ImageSource, level: int, grid: RegionGrid, zero_empty: bool
) -> Foreground:
    low = _low_level(source, level, grid.region_size)
    run_ds, low_ds = source.downsample(level), source.downsample(low)
    factor = (low_ds[0] / run_ds[0], low_ds[1] / run_ds[1])  # run-level px per low-level px
    ys, xs = _cell_bounds(grid, factor)
    width = int(xs[-1, 1] - xs[0, 0])
    nodata = source.nodata if source.nodata is not None else 0.0 if zero_empty else None
    cells: list[np.ndarray] = []  # per grid row: (cols, samples) grey values or data flags
    for band in _bands(grid, ys, width):
        y0, y1 = int(ys[band.start, 0]), int(ys[band.stop - 1, 1])
        pixels = source.read(low, y0, int(xs[0, 0]), y1, int(xs[-1, 1])).astype(np.float32)
        for r in band:
            row = pixels[:, ys[r, 0] - y0 : ys[r, 1] - y0]
            for c in range(grid.cols):
                cell = row[:, :, xs[c, 0] - xs[0, 0] : xs[c, 1] - xs[0, 0]]
                if method == "otsu":
                    step = max(1, -(-max(cell.shape[1:]) // SAMPLES))
                    grey = cell[: min(3, cell.shape[0]), ::step, ::step].mean(axis=0)
                    cells.append(grey.reshape(-1))
                else:
                    cells.append(np.asarray([_has_data(cell, nodata)]))
    details: dict[str, Any] = {"level": low}
    if method == "otsu":
        samples = np.concatenate(cells) if cells else np.zeros(0, np.float32)
        threshold = otsu_threshold(samples)
        details["threshold"] = round(float(threshold), 3)
        run = np.array([(c < threshold).mean() >= MIN_FRACTION if c.size else False for c in cells])
    else:
        run = np.array([bool(c[0]) for c in cells])
    return Foreground(method, run.astype(bool), details)


def _has_data(cell: np.ndarray, nodata: float | None) -> bool:
    """Whether any pixel of (C, h, w) ``cell`` has data (see the module docstring)."""
    if cell.size == 0:
        return False
    finite = np.isfinite(cell).all(axis=0)
    if nodata is None or nodata != nodata:  # NaN nodata: the finite check covers it
        return bool(finite.any())
    return bool((finite & ~(cell == nodata).all(axis=0)).any())


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the cut maximising the between-class variance (the
    middle of the cuts that tie, e.g. across an empty gap between the two modes)."""
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) + 1.0 if values.size else 0.0  # one class: all "below"
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(np.float64)
    total = weight[-1]
    mean = np.cumsum(hist * centres)
    between = (mean[-1] * weight - mean * total) ** 2 / np.maximum(
        weight * (total - weight), 1e-12
    )
    between = between[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # an empty gap: its middle
    return float(edges[int(round((best[0] + best[-1]) / 2)) + 1])


def _mask_regions(spec: object, source: ImageSource, level: int, grid: RegionGrid) -> Foreground:
    try:
        mask = open_image(spec)
    except InputError as err:
        raise InputError(f"cannot read the foreground mask: {err.problem}", err.fix) from err
    mh, mw = mask.shape_yx(0)
    h0, w0 = source.shape_yx(0)
    run_ds = source.downsample(level)
    factor = (h0 / mh / run_ds[0], w0 / mw / run_ds[1])  # run-level px per mask px
    ys, xs = _cell_bounds(grid, factor)
    run = np.zeros(len(grid), dtype=bool)
    for band in _bands(grid, ys, mw):
        y0, y1 = int(ys[band.start, 0]), int(ys[band.stop - 1, 1])
        pixels = np.asarray(mask.read(0, y0, 0, y1, mw).any(axis=0))
        for r in band:
            row = pixels[ys[r, 0] - y0 : ys[r, 1] - y0]
            for c in range(grid.cols):
                run[r * grid.cols + c] = bool(row[:, xs[c, 0] : xs[c, 1]].any())
    path = mask.metadata.get("path")
    return Foreground("mask", run, {"mask": str(path) if path else mask.name})


def plan_foreground(
    model: Any, source: ImageSource, level: int, grid: RegionGrid, spec: object
) -> Foreground:
    """The run's foreground; whole-sequence models (their token layout spans the whole image)
    run every region."""
    if getattr(model, "whole_sequence", False):
        return Foreground("none", np.ones(len(grid), dtype=bool), {"reason": "whole-sequence"})
    return foreground_regions(source, level, grid, spec)
