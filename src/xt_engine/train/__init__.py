"""End-to-end training on large images and label masks (``xt train``)."""

from xt_engine.train.config import TrainConfig
from xt_engine.train.trainer import TrainEvent, train

__all__ = ["TrainConfig", "TrainEvent", "train"]
