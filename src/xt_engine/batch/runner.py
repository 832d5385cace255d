"""Many images through one model: :func:`run_batch`, on a ``distributed`` client or in this
process (``client=None``: one image after the other, as a ``--shard`` runs).

On a client every image is one task (:func:`xt_engine.batch.worker.process_image`), with the
worker plugin that loads the model once per worker registered first. A task whose worker died
(killed, out of memory: ``KilledWorker``) is submitted again, up to ``retries`` times, and
resumes from its store; then the image is reported failed. An image whose store another
process holds (``busy``) is tried again after the others, every few seconds, until that
process lets it go (then it is usually complete, and skipped), or ``busy_wait_s`` passed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from xt_engine.batch.inputs import ImageTask
from xt_engine.batch.report import ImageResult
from xt_engine.batch.worker import (
    PLUGIN_NAME,
    ModelCache,
    RunOptions,
    XTWorkerPlugin,
    process_image,
    progress_topic,
)

#: what the runner reports to a display: ("image", name, done, total) while an image runs,
#: ("finished", ImageResult) once an image has its final result
Listener = Callable[..., None]


def new_run_id() -> str:
    return uuid.uuid4().hex


def run_batch(
    tasks: list[ImageTask],
    options: RunOptions,
    client: Any = None,
    *,
    retries: int = 2,
    busy_wait_s: float = 24 * 3600.0,
    resources: dict[str, float] | None = None,
    listener: Listener | None = None,
    cache: ModelCache | None = None,
) -> list[ImageResult]:
    """Every task's :class:`ImageResult`, in the order of ``tasks``."""
    notify = listener or (lambda *args: None)
    if client is None:
        return _serial(tasks, options, busy_wait_s, notify, cache or ModelCache())
    return _distributed(tasks, options, client, retries, busy_wait_s, resources, notify)


def _serial(
    tasks: list[ImageTask],
    options: RunOptions,
    busy_wait_s: float,
    notify: Listener,
    cache: ModelCache,
) -> list[ImageResult]:
    results: dict[str, ImageResult] = {}
    queue: deque[tuple[ImageTask, float]] = deque((task, 0.0) for task in tasks)
    first_busy: dict[str, float] = {}
    while queue:
        task, delay = queue.popleft()
        result = process_image(
            task,
            options,
            delay=delay,
            cache=cache,
            on_progress=lambda name, done, total: notify("image", name, done, total),
        )
        if _busy_again(result, task, first_busy, busy_wait_s):
            queue.append((task, 0.0 if len(queue) else _BUSY_DELAY_S))
            continue
        results[task.name] = result
        notify("finished", result)
    return [results[task.name] for task in tasks]


_BUSY_DELAY_S = 2.0


def _busy_again(
    result: ImageResult, task: ImageTask, first: dict[str, float], limit: float
) -> bool:
    """Whether a ``busy`` image is to be tried again; a ``busy`` past ``limit`` is failed."""
    if result.status != "busy":
        return False
    since = first.setdefault(task.name, time.monotonic())
    if time.monotonic() - since < limit:
        return True
    result.status = "failed"
    result.error = f"{result.error} for {limit:.0f} s"
    return False


def _distributed(
    tasks: list[ImageTask],
    options: RunOptions,
    client: Any,
    retries: int,
    busy_wait_s: float,
    resources: dict[str, float] | None,
    notify: Listener,
) -> list[ImageResult]:
    from distributed import KilledWorker, wait

    client.register_plugin(XTWorkerPlugin(), name=PLUGIN_NAME)
    topic = progress_topic(options.run_id)
    lock = threading.Lock()

    def on_event(event: Any) -> None:
        _, msg = event
        with lock:
            notify("image", msg["image"], msg["done"], msg["total"])

    client.subscribe_topic(topic, on_event)
    running: dict[Any, tuple[ImageTask, int]] = {}
    results: dict[str, ImageResult] = {}
    first_busy: dict[str, float] = {}
    count = 0

    def submit(task: ImageTask, attempt: int, delay: float = 0.0) -> None:
        nonlocal count
        count += 1
        key = f"xt-batch-{task.name}-{options.run_id[:8]}-{count}"
        future = client.submit(
            process_image, task, options, attempt, delay, key=key, pure=False, resources=resources
        )
        running[future] = (task, attempt)

    def finish(result: ImageResult) -> None:
        results[result.store.removesuffix(".zarr")] = result
        with lock:
            notify("finished", result)

    for task in tasks:
        submit(task, 1)
    try:
        while running:
            try:
                done = wait(list(running), timeout=0.5, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            for future in done:
                task, attempt = running.pop(future)
                try:
                    result = future.result()
                except KilledWorker:
                    if attempt <= retries:
                        submit(task, attempt + 1)
                        continue
                    result = ImageResult(task.path, f"{task.name}.zarr", attempts=attempt)
                    result.error = f"its worker died {attempt} times (killed or out of memory)"
                except Exception as err:  # noqa: BLE001 - e.g. a task that could not be sent
                    result = ImageResult(task.path, f"{task.name}.zarr", attempts=attempt)
                    result.error = f"{type(err).__name__}: {err}"
                if _busy_again(result, task, first_busy, busy_wait_s):
                    submit(task, attempt, _BUSY_DELAY_S)
                    continue
                finish(replace(result, attempts=attempt))
    finally:
        client.unsubscribe_topic(topic)
        for future in running:
            future.cancel()
    return [results[task.name] for task in tasks]
