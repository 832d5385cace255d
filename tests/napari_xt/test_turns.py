"""The GUI thread's setup of a run is split into turns of the event loop, and the engine's
compute waits until the run's layers exist (napari inserts a Labels layer in one long turn)."""

from __future__ import annotations

import threading
import time

import pytest

from napari_xt._threads import engine_events, run_in_turns
from xt_engine import Started
from xt_engine.errors import InputError
from xt_engine.tiling import RegionGrid

pytestmark = pytest.mark.gui


def test_steps_run_in_order_with_the_event_loop_turning_between_them(qtbot) -> None:
    from qtpy.QtCore import QTimer

    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    heartbeat.start(5)
    seen: list[tuple[str, int]] = []

    def step(name: str, fail: bool = False):
        def run() -> None:
            time.sleep(0.03)  # a long step: the heartbeat falls due meanwhile
            seen.append((name, len(beats)))
            if fail:
                raise RuntimeError(name)

        return run

    qtbot.wait(20)
    with qtbot.capture_exceptions() as errors:  # a failing step is reported, the rest run
        run_in_turns([step("a"), step("b", fail=True), step("c")])
        qtbot.waitUntil(lambda: len(seen) == 3, timeout=2000)
    heartbeat.stop()
    assert [str(err[1]) for err in errors] == ["b"]
    assert [name for name, _ in seen] == ["a", "b", "c"]
    counts = [n for _, n in seen]
    assert counts[0] < counts[1] < counts[2]  # the heartbeat ran between every two steps


def test_the_engine_waits_for_the_layers_after_started() -> None:
    grid = RegionGrid.for_image((64, 64), 64, None, 0)
    computed: list[str] = []

    def engine():
        yield Started(1, grid, 0, (64, 64), 2)
        computed.append("first batch")
        yield "region"
        raise InputError("bad input", "the fix")

    ready = threading.Event()
    events = engine_events(engine(), ready)
    assert isinstance(next(events), Started)
    worker = threading.Thread(target=lambda: computed.append(next(events)))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and computed == []  # no compute before the layers exist
    ready.set()
    worker.join(2)
    assert computed == ["first batch", "region"]
    assert isinstance(next(events), InputError)  # the engine's error as one event
