"""Streaming inference: prefetch, batching, device, cancel, events.

The names are imported on first use (PEP 562): the command line reads
:mod:`.feature_cache`'s default without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xt_engine.runtime.cancel import CancelToken
    from xt_engine.runtime.events import Event, Finished, Progress, RegionDone, Started
    from xt_engine.runtime.inference import run_inference

_HOMES = {
    "CancelToken": "xt_engine.runtime.cancel",
    **dict.fromkeys(
        ("Event", "Finished", "Progress", "RegionDone", "Started"), "xt_engine.runtime.events"
    ),
    "run_inference": "xt_engine.runtime.inference",
}

__all__ = [  # the names of _HOMES
    "CancelToken",
    "Event",
    "Finished",
    "Progress",
    "RegionDone",
    "Started",
    "run_inference",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'xt_engine.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
