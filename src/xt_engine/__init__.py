"""xt_engine: the headless xT engine (no napari, no Qt).

Public API::

    from xt_engine import XTConfig, create_model, save_checkpoint, load_checkpoint
    from xt_engine import open_image, run_inference, CancelToken
"""

from xt_engine.config import XTConfig
from xt_engine.errors import CheckpointError, ConfigError, InputError, XTError
from xt_engine.io import ImageSource, open_image
from xt_engine.models import XTModel, create_model, list_models, register_model
from xt_engine.runtime import CancelToken, Finished, Progress, RegionDone, Started, run_inference
from xt_engine.tiling import Region, RegionGrid
from xt_engine.weights.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint

__version__ = "0.1.0"

__all__ = [
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
