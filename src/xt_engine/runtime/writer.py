"""Writes results to the output store in a background thread, overlapping compute.

zarr's writes (compression, file I/O through its own event loop) cost about a third of a CPU
run's time when done inline. The writer keeps at most ``max_pending`` batches queued, so memory
stays bounded; the first write error is raised in the caller at the next submit or at ``close``.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from xt_engine.runtime.events import RegionDone
from xt_engine.store.result_store import OutputStore


class BackgroundWriter:
    def __init__(self, store: OutputStore, max_pending: int = 2) -> None:
        self.store = store
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xt-writer")
        self._pending: deque[Future[None]] = deque()

    def submit(self, events: list[RegionDone]) -> None:
        """Queue one batch's regions (written in order, each marked done after its data)."""
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, events))

    def _write(self, events: list[RegionDone]) -> None:
        self.store.write_batch(
            [(e.region, e.labels, e.attention, e.detections, e.probabilities) for e in events]
        )

    def close(self) -> None:
        """Wait for every queued write (raising the first error) and stop the thread."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
