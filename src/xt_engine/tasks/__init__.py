"""Tasks: each owns its head, a region's results, and its training (see :mod:`.base`).

- :mod:`.segmentation`: a class per pixel (labels, probabilities, seam blending; cross-entropy
  + dice, IoU / F1);
- :mod:`.detection`: centres and box sizes (decoding, border suppression) and
  :mod:`.detection_training` (targets from connected components, focal loss, matched centres);
- :mod:`.classification`: one class per image (mean or cls pooling, ``XTModel.finish``);
- :mod:`.trunk`: the fusion trunk the dense heads share.

:func:`task_for` is the one registry: the task of a name, a head config or a model config.
"""

from __future__ import annotations

from xt_engine.config import HeadConfig, XTConfig
from xt_engine.errors import ConfigError
from xt_engine.tasks.base import RegionResult, Task
from xt_engine.tasks.classification import ClassificationTask
from xt_engine.tasks.detection import BorderSuppression, DetectionTask, decode_detections
from xt_engine.tasks.segmentation import SegmentationTask, segmentation_labels

TASKS: dict[str, Task] = {
    task.name: task for task in (SegmentationTask(), DetectionTask(), ClassificationTask())
}


def task_for(spec: str | HeadConfig | XTConfig) -> Task:
    """The task of ``spec``: a task name, a :class:`HeadConfig` (its ``task``) or an
    :class:`XTConfig` (its ``head.task``)."""
    if isinstance(spec, XTConfig):
        spec = spec.head
    name = spec.task if isinstance(spec, HeadConfig) else spec
    if name not in TASKS:
        raise ConfigError(f"head.task={name!r} is unknown", f"use one of {', '.join(TASKS)}")
    return TASKS[name]


__all__ = [
    "TASKS",
    "BorderSuppression",
    "ClassificationTask",
    "DetectionTask",
    "RegionResult",
    "SegmentationTask",
    "Task",
    "decode_detections",
    "segmentation_labels",
    "task_for",
]
