"""Streaming inference: prefetch, batching, device, cancel, events."""

from xt_engine.runtime.cancel import CancelToken
from xt_engine.runtime.events import Event, Finished, Progress, RegionDone, Started
from xt_engine.runtime.inference import run_inference

__all__ = [
    "CancelToken",
    "Event",
    "Finished",
    "Progress",
    "RegionDone",
    "Started",
    "run_inference",
]
