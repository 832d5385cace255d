"""Keeping torch's CPU work off napari's GUI thread, even the short bits; and splitting the GUI
thread's own setup work into turns of the event loop (:func:`run_in_turns`).

torch's CPU kernels parallelise with OpenMP (libgomp), which keeps one thread pool per thread
that starts parallel work, alive as long as that thread. Once the GUI thread has run one
parallel op (loading a model is enough), every run in a worker thread has a second pool beside
it; with more pool threads than cores libgomp stops spinning between parallel regions and its
threads sleep and wake instead: on 2 cores the demo model's region encoder took 16.4 ms per
batch in a worker thread against 8.5-11 ms when the GUI thread never ran torch (measured
2026-11-27). So model loading and the sample's inference run in a short-lived thread, whose
pool goes away with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from xt_engine import Started, XTError

T = TypeVar("T")


def call_in_fresh_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a new thread, waited for (blocks the caller like a direct
    call); its exception is re-raised here."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as err:  # re-raised in the caller
            outcome["error"] = err

    thread = threading.Thread(target=target, name="napari-xt-torch")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


TURN_GAP_MS = 15
LAYERS_WAIT_S = 2.0  # the worker's longest wait for the GUI to make a run's layers


def run_in_turns(steps: list[Callable[[], object]], gap_ms: int = TURN_GAP_MS) -> None:
    """Run ``steps`` on the GUI thread one per turn of the event loop, each ``gap_ms`` after the
    previous one ended, so the loop handles input and timers between them. (A 0 ms timer runs
    before the timers that fell due meanwhile, and timers due together run in one pass: either
    way two long steps would make one long stall.) A failing step does not stop the rest."""
    from qtpy.QtCore import QTimer  # here: the sample data's import of this module stays Qt-free

    if not steps:
        return
    first, rest = steps[0], steps[1:]

    def step() -> None:
        try:
            first()
        finally:
            run_in_turns(rest, gap_ms)

    QTimer.singleShot(gap_ms, step)


def engine_events(
    events: Iterator[object], layers_ready: threading.Event | None = None
) -> Iterator[object]:
    """The engine's generator as the widget's worker runs it. The engine's own errors (bad
    input, named fix) arrive as events and become one clean notification; anything else still
    raises through the worker's ``errored`` signal.

    After ``Started`` the worker waits (at most ``LAYERS_WAIT_S``) for ``layers_ready``: napari
    inserts a new Labels layer on the GUI thread in one turn (80-100 ms on this CPU), and with
    the model's threads busy on both cores that turn took longer than with them idle."""
    try:
        for event in events:
            yield event
            if layers_ready is not None and isinstance(event, Started):
                layers_ready.wait(LAYERS_WAIT_S)
    except XTError as err:
        yield err
    finally:  # closing this generator closes the engine's (its store is left resumable)
        close = getattr(events, "close", None)
        if close is not None:
            close()
