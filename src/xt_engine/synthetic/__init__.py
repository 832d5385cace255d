"""Synthetic scenes whose labels need context beyond one region.

- :mod:`.sar`: SAR-like scenes (sea, land, vessels near shore or offshore), the demo task.
- :mod:`.context_tasks`: a family of long-range dependency tasks (a cue within k regions, a
  global cue, a cue at a relative offset, a count over the image), each with its scorer.
"""

from xt_engine.synthetic.context_tasks import (
    CONTEXT_TASK_CLASS_NAMES,
    CONTEXT_TASKS,
    ContextScene,
    context_accuracy,
    make_context_scene,
    score_context_task,
)
from xt_engine.synthetic.sar import SAR_CLASS_COLORS, SAR_CLASS_NAMES, make_sar_scene

__all__ = [
    "CONTEXT_TASKS",
    "CONTEXT_TASK_CLASS_NAMES",
    "SAR_CLASS_COLORS",
    "SAR_CLASS_NAMES",
    "ContextScene",
    "context_accuracy",
    "make_context_scene",
    "make_sar_scene",
    "score_context_task",
]
