"""Input values per model config: how raw pixels become the model's [0, 1] inputs, and the
checks that name a mismatch between an image and a model before anything runs.

Scaled value = raw x ``scale`` + ``offset`` (:func:`input_mapping`, from
``region_encoder``):

* ``input_scale`` (a number): ``scale`` = it, e.g. 1e-4 for uint16 reflectance stored as
  DN = 10000 x reflectance;
* ``input_range`` (lo, hi), or ``input_scaling`` ``db`` (SAR backscatter in dB, float images;
  default range ``DB_RANGE`` -30 .. 10 dB): lo -> 0, hi -> 1;
* else ``input_scaling``: ``auto`` by dtype (uint8 / 255, uint16 / 65535, other integers by
  their maximum, floats unchanged), or ``uint8`` / ``uint16`` / ``float`` forced.

The runtime's reader multiplies by ``scale``; an ``offset`` (ranges) is applied by
:func:`prepare_input`, which wraps the levels to read float32 mapped values (nodata pixels as
NaN, which the reader treats as without data) and hands the reader a scale of 1.

:func:`check_inputs` refuses an image whose channel count differs from the model's, an image
of another pixel type than ``input_dtype``, and integer pixels for a dB model; it warns
(:class:`XTWarning`) when uint8 pixels meet a model that expects a wider scale (values would
reach only a few percent of [0, 1]). :func:`modality_foreground` turns ``--foreground auto``
into the method the model's ``modality`` implies.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from xt_engine.config import DB_RANGE, RegionEncoderConfig, XTConfig
from xt_engine.errors import InputError, XTWarning
from xt_engine.io.source import ImageSource

#: ``--foreground auto`` per model modality (``any``: the image decides, see foreground.py)
MODALITY_FOREGROUND = {
    "brightfield": "otsu",
    "fluorescence": "none",
    "sar": "nodata",
    "optical": "nodata",
}


def pixel_scale(dtype: np.dtype, scaling: str) -> float:
    """Factor mapping raw pixels to [0, 1]: 1/255 for uint8, 1/65535 for uint16, 1 for floats."""
    if scaling == "uint8" or (scaling == "auto" and dtype == np.uint8):
        return 1.0 / 255.0
    if scaling == "uint16" or (scaling == "auto" and dtype == np.uint16):
        return 1.0 / 65535.0
    if scaling == "auto" and np.issubdtype(dtype, np.integer):
        return 1.0 / float(np.iinfo(dtype).max)
    return 1.0


def input_mapping(dtype: np.dtype, cfg: RegionEncoderConfig) -> tuple[float, float]:
    """(scale, offset) with scaled = raw x scale + offset (see the module docstring)."""
    if cfg.input_scale is not None:
        return float(cfg.input_scale), 0.0
    if cfg.input_range is not None or cfg.input_scaling == "db":
        lo, hi = cfg.input_range or DB_RANGE
        return 1.0 / (hi - lo), -lo / (hi - lo)
    return pixel_scale(np.dtype(dtype), cfg.input_scaling), 0.0


def check_inputs(source: ImageSource, config: XTConfig) -> None:
    """InputError for an image the model cannot take; XTWarning for a doubtful one."""
    cfg = config.region_encoder
    name, dtype = source.name, source.dtype
    if source.num_channels != cfg.in_chans:
        more = source.num_channels > cfg.in_chans
        fix = (
            f"keep the model's {cfg.in_chans} band(s) (e.g. gdal_translate -b 1 ... {name} "
            "out.tif) or pick a model trained on "
            f"{source.num_channels} channels"
            if more
            else f"pick a model trained on {source.num_channels} channel(s), or give an image "
            f"with {cfg.in_chans}"
        )
        plural = "" if cfg.in_chans == 1 else "s"
        raise InputError(
            f"model expects {cfg.in_chans} input channel{plural}, {name} has {source.num_channels}",
            fix,
        )
    if cfg.input_dtype is not None and dtype != np.dtype(cfg.input_dtype):
        raise InputError(
            f"model expects {cfg.input_dtype} pixels{_scaled(cfg)}, {name} is {dtype}",
            f"give the {cfg.input_dtype} image the model was made for (not a converted or "
            f"8-bit export), or pick a model trained on {dtype}",
        )
    if cfg.input_scaling == "db" and cfg.input_scale is None and not _is_float(dtype):
        raise InputError(
            f"model expects SAR backscatter in dB (float), {name} is {dtype}",
            "convert the scene to dB as float32 (10 * log10 of the linear power), or pick a "
            "model for its values",
        )
    wide = cfg.input_scaling == "uint16" or (
        cfg.input_scale is not None and cfg.input_scale < 1.0 / 1000.0
    )
    if dtype == np.uint8 and wide:
        scale, offset = input_mapping(dtype, cfg)
        warnings.warn(
            f"{name} is uint8 but the model scales values as wider data ({_scaled(cfg)[2:]}): "
            f"its inputs reach only {255 * scale + offset:.3g} of [0, 1]; give the model the "
            "uint16 data it was trained on",
            XTWarning,
            stacklevel=2,
        )


def prepare_input(source: ImageSource, config: XTConfig) -> tuple[ImageSource, float]:
    """The source to read and the reader's scale: ``source`` itself and the mapping's scale
    without an offset; else a float32 source of mapped values (nodata as NaN) and 1."""
    scale, offset = input_mapping(source.dtype, config.region_encoder)
    if offset == 0.0:
        return source, scale
    levels = [
        MappedLevel(level, source.axes, scale, offset, source.nodata) for level in source.levels
    ]
    return dataclasses.replace(source, levels=levels, nodata=None), 1.0


def modality_foreground(config: XTConfig, foreground: object) -> object:
    """``auto`` -> the method the model's modality implies; anything else as given."""
    if isinstance(foreground, str) and foreground == "auto":
        return MODALITY_FOREGROUND.get(config.region_encoder.modality, "auto")
    return foreground


class MappedLevel:
    """A level read as float32 ``raw x scale + offset``; pixels whose channels all equal
    ``nodata`` read as NaN."""

    def __init__(
        self, array: Any, axes: str, scale: float, offset: float, nodata: float | None
    ) -> None:
        self.array, self.axes = array, axes
        self.scale, self.offset, self.nodata = scale, offset, nodata
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        raw = np.asarray(self.array[key])
        out = raw.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        if self.nodata is not None:
            empty = raw == self.nodata
            if "c" in self.axes:
                empty = empty.all(axis=self.axes.index("c"), keepdims=True)
            out[np.broadcast_to(empty, out.shape)] = np.nan
        return out


def _scaled(cfg: RegionEncoderConfig) -> str:
    if cfg.input_scale is not None:
        return f", x {cfg.input_scale:g}"
    if cfg.input_scaling == "db" or cfg.input_range is not None:
        lo, hi = cfg.input_range or DB_RANGE
        return f", {lo:g} .. {hi:g} mapped to [0, 1]"
    return f", scaled as {cfg.input_scaling}"


def _is_float(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.floating))
