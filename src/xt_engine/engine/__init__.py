"""Streaming inference: prefetch, batching, device, cancel, events."""

from xt_engine.engine.cancel import CancelToken
from xt_engine.engine.events import Event, Finished, Progress, RegionDone, Started
from xt_engine.engine.inference import run_inference

__all__ = [
    "CancelToken",
    "Event",
    "Finished",
    "Progress",
    "RegionDone",
    "Started",
    "run_inference",
]
