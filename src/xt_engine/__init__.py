"""xt_engine: the headless xT engine (no napari, no Qt).

Public API::

    from xt_engine import XTConfig, create_model, save_checkpoint, load_checkpoint
    from xt_engine import open_image, run_inference, CancelToken

The names are imported on first use (PEP 562), so ``import xt_engine.cli`` and ``xt --help``
do not import torch or timm (``tests/xt_engine/test_import_boundary.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xt_engine.config import XTConfig
    from xt_engine.errors import CheckpointError, ConfigError, InputError, XTError
    from xt_engine.io import ImageSource, open_image
    from xt_engine.models import XTModel, create_model, list_models, register_model
    from xt_engine.runtime import (
        CancelToken,
        Finished,
        Progress,
        RegionDone,
        Started,
        run_inference,
    )
    from xt_engine.tiling import Region, RegionGrid
    from xt_engine.weights.checkpoint import (
        load_checkpoint,
        read_checkpoint_config,
        save_checkpoint,
    )

__version__ = "0.1.0"

_HOMES = {  # public name -> the module that defines it
    "XTConfig": "xt_engine.config",
    **dict.fromkeys(
        ("CheckpointError", "ConfigError", "InputError", "XTError"), "xt_engine.errors"
    ),
    **dict.fromkeys(("ImageSource", "open_image"), "xt_engine.io"),
    **dict.fromkeys(
        ("XTModel", "create_model", "list_models", "register_model"), "xt_engine.models"
    ),
    **dict.fromkeys(
        ("CancelToken", "Finished", "Progress", "RegionDone", "Started", "run_inference"),
        "xt_engine.runtime",
    ),
    **dict.fromkeys(("Region", "RegionGrid"), "xt_engine.tiling"),
    **dict.fromkeys(
        ("load_checkpoint", "read_checkpoint_config", "save_checkpoint"),
        "xt_engine.weights.checkpoint",
    ),
}

__all__ = [  # the names of _HOMES and __version__ (tests/xt_engine/test_import_boundary.py)
    "CancelToken",
    "CheckpointError",
    "ConfigError",
    "Finished",
    "ImageSource",
    "InputError",
    "Progress",
    "Region",
    "RegionDone",
    "RegionGrid",
    "Started",
    "XTConfig",
    "XTError",
    "XTModel",
    "__version__",
    "create_model",
    "list_models",
    "load_checkpoint",
    "open_image",
    "read_checkpoint_config",
    "register_model",
    "run_inference",
    "save_checkpoint",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'xt_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
