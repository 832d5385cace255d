"""Per-task post-processing of region outputs (what a task does after the head, before the store).

- :mod:`.detection`: heat map peaks -> detection rows (:func:`decode_detections`), and
  :class:`BorderSuppression`, which reports an object straddling a region border once.
"""

from __future__ import annotations

from xt_engine.tasks.detection import BorderSuppression, decode_detections

__all__ = ["BorderSuppression", "decode_detections"]
