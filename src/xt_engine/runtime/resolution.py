"""Physical resolution: which pyramid level (or resampled level) a run reads.

A target pixel size comes from the run (``xt infer --mpp X``, ``--pixel-size X[unit]``) or,
when not given, from the model (``tiling.pixel_size`` / ``tiling.pixel_unit``, the pixel size it
was trained at). :func:`plan_resolution` converts it to the image's unit and takes the level
whose pixel size is closest (in ratio); when none lies within ``TOLERANCE`` (10%), it adds a
virtual level resized from the closest finer level (the coarsest level with smaller pixels,
level 0 when the target is finer than every level) through :mod:`xt_engine.io.resample`.

A level's pixel size is the geometric mean of its (y, x) sizes: ``pixel_size x downsample``.
Without a target, or with ``level`` given, nothing is planned. An image without a pixel size
(or in degrees against a model in metres) meets a model's target at level 0 with an
:class:`~xt_engine.errors.XTWarning` saying so (units are never invented); the same with an
explicit ``--mpp`` is an :class:`~xt_engine.errors.InputError`.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

from xt_engine.config import TilingConfig
from xt_engine.errors import InputError, XTWarning
from xt_engine.io.resample import with_resampled_level
from xt_engine.io.source import ImageSource

TOLERANCE = 0.10
#: metres per unit, for the spellings readers, configs and the CLI use
METERS = {
    "nanometer": 1e-9,
    "nm": 1e-9,
    "micrometer": 1e-6,
    "micron": 1e-6,
    "um": 1e-6,
    "µm": 1e-6,
    "μm": 1e-6,
    "millimeter": 1e-3,
    "mm": 1e-3,
    "centimeter": 1e-2,
    "cm": 1e-2,
    "meter": 1.0,
    "metre": 1.0,
    "m": 1.0,
    "kilometer": 1e3,
    "km": 1e3,
}
ANGLES = ("degree", "deg")
_CANONICAL = {
    1e-9: "nanometer",
    1e-6: "micrometer",
    1e-3: "millimeter",
    1e-2: "centimeter",
    1.0: "meter",
    1e3: "kilometer",
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµμ]*)\s*$")


@dataclass(frozen=True)
class ResolutionPlan:
    """The source and level a run reads, and the effective pixel size there.

    ``pixel_size`` (geometric mean of y, x) is in ``unit`` (the image's), None without one;
    ``resampled``: the level is a virtual one (``source`` then is a new source holding it).
    """

    source: ImageSource
    level: int
    pixel_size: float | None
    unit: str | None
    resampled: bool


def parse_pixel_size(text: str, unit: str | None = None) -> tuple[float, str]:
    """``"0.5"``, ``"0.5um"``, ``"10m"``, ``"10 meter"`` -> (value, canonical unit name);
    a bare number takes ``unit`` (default micrometer)."""
    match = _SIZE.match(text)
    name = (match.group(2) if match else "") or unit or "micrometer"
    canonical = canonical_unit(name)
    if match is None or canonical is None or float(match.group(1)) <= 0:
        raise InputError(
            f"--pixel-size {text!r} is not a positive size with a known unit",
            "write e.g. 0.5um, 0.25 (micrometres), 10m or 0.0001deg",
        )
    return float(match.group(1)), canonical


def canonical_unit(name: str | None) -> str | None:
    """The NGFF-style name of a length unit (``micrometer``, ``meter``, ...) or ``degree``."""
    if name is None:
        return None
    key = name.strip().lower()
    key = key[:-1] if key.endswith("s") and key[:-1] in (*METERS, *ANGLES) else key
    if key in ANGLES:
        return "degree"
    factor = METERS.get(key)
    return None if factor is None else _CANONICAL[factor]


def convert(value: float, unit: str | None, to: str | None) -> float | None:
    """``value`` in ``unit`` expressed in ``to``; None when they are not comparable."""
    a, b = canonical_unit(unit), canonical_unit(to)
    if a is None or b is None:
        return None
    if a == b:
        return value
    if "degree" in (a, b):
        return None
    return value * METERS[a] / METERS[b]


def level_pixel_size(source: ImageSource, level: int) -> float | None:
    """The geometric mean of a level's (y, x) pixel size, in ``source.unit``."""
    if source.pixel_size is None:
        return None
    (py, px), (dy, dx) = source.pixel_size, source.downsample(level)
    return math.sqrt(py * dy * px * dx)


def plan_resolution(
    source: ImageSource,
    tiling: TilingConfig,
    *,
    level: int | None = None,
    pixel_size: float | None = None,
    pixel_unit: str | None = None,
) -> ResolutionPlan:
    """The level for a run (see the module docstring). ``level`` given (and no
    ``pixel_size``) is used as it is; ``pixel_size`` with ``pixel_unit`` (default
    micrometer) is an explicit target; else the model's ``tiling.pixel_size``."""
    if pixel_size is not None and level not in (None, 0):
        raise InputError(
            f"--level {level} and a pixel size both choose the level", "give one of them"
        )
    explicit = pixel_size is not None
    if not explicit and (level is not None or tiling.pixel_size is None):
        return _plan(source, level or 0, False)
    target = pixel_size if explicit else tiling.pixel_size
    unit = (pixel_unit or "micrometer") if explicit else tiling.pixel_unit
    assert target is not None
    wanted = convert(target, unit, source.unit) if source.pixel_size else None
    if wanted is None:
        stated = (
            f"states its pixel size in {source.unit}s"
            if source.pixel_size
            else "states no pixel size"
        )
        problem = (
            f"{source.name} {stated}, so a pixel size of {target:g} {unit} cannot pick a level"
        )
        if explicit:
            raise InputError(problem, "choose the level with --level instead")
        warnings.warn(
            f"{problem}: running at level 0 (the model was trained at {target:g} {unit}; "
            "give --level or --mpp to choose)",
            XTWarning,
            stacklevel=2,
        )
        return _plan(source, 0, False)
    sizes = [level_pixel_size(source, i) or 0.0 for i in range(source.num_levels)]
    best = min(range(len(sizes)), key=lambda i: abs(math.log(sizes[i] / wanted)))
    if abs(sizes[best] / wanted - 1.0) <= TOLERANCE:
        return _plan(source, best, False)
    finer = [i for i, s in enumerate(sizes) if s < wanted]
    base = max(finer, key=lambda i: sizes[i]) if finer else 0
    h, w = source.shape_yx(0)
    (py, px) = source.pixel_size or (1.0, 1.0)
    shape = (max(1, round(h * py / wanted)), max(1, round(w * px / wanted)))
    resampled, index = with_resampled_level(source, base, shape)
    return _plan(resampled, index, True)


def _plan(source: ImageSource, level: int, resampled: bool) -> ResolutionPlan:
    source.shape_yx(level)  # an InputError naming the levels when it does not exist
    return ResolutionPlan(source, level, level_pixel_size(source, level), source.unit, resampled)
