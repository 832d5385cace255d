"""Where a batch's images run: a ``distributed`` cluster made here or an existing scheduler.

``local`` (:func:`local_cluster`): one worker process per GPU, each with
``CUDA_VISIBLE_DEVICES`` set to its own GPU and the worker resource ``GPU=1``; without GPUs,
``N`` worker processes sharing the cores (``cores // N`` threads each, never more threads than
cores; default: one process per core, at most one per 2 GiB of memory: on this 2-core machine
2 workers x 1 thread ran 1.02-1.67x the images/hour of 1 x 2 in 7 runs, benchmarks/batch.py).
Every worker declares the resource ``image=1`` and every image asks for it (or for ``GPU=1``),
so a worker runs one image at a time with all its threads (torch's thread count is the
worker's).

Worker deaths are retried by the batch itself (:mod:`xt_engine.batch.runner`), so the local
scheduler gives a task up at its first worker death (``allowed-failures: 0``) and hands tasks
out one per free thread (``worker-saturation: 1.0``: no task waits on a worker that may die).
Worker processes start without dask's ``MALLOC_TRIM_THRESHOLD_=65536`` (setting it turns off
glibc's dynamic mmap threshold, and torch's CPU work ran 22-70% slower with it in
benchmarks/batch.py's serial loop on this 2-core machine); ``OMP/MKL/OPENBLAS_NUM_THREADS=1``
stay (torch's threads are set per worker).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xt_engine.errors import InputError

#: the environment dask gives worker processes, less MALLOC_TRIM_THRESHOLD_
WORKER_ENVIRON = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
SCHEDULER_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.nanny.pre-spawn-environ": WORKER_ENVIRON,
}


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs this process sees (``CUDA_VISIBLE_DEVICES`` when set, else the
    driver's list), without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and not g.startswith("-")]
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def parse_cluster(text: str) -> int | None:
    """``local`` -> None (sized to the machine), ``local:N`` -> N."""
    match = re.fullmatch(r"local(?::(\d+))?", text.strip())
    if not match or (match[1] is not None and int(match[1]) < 1):
        raise InputError(f"--cluster {text} is not local or local:N", "e.g. --cluster local:2")
    return int(match[1]) if match[1] else None


def machine_memory_gib() -> float:
    """Physical memory, GiB."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2.0


def local_sizes(
    workers: int | None,
    threads: int | None,
    gpus: int,
    cores: int,
    memory_gib: float | None = None,
) -> tuple[int, int]:
    """(worker processes, threads each) for a local cluster (see the module docstring)."""
    if workers is None:
        memory = machine_memory_gib() if memory_gib is None else memory_gib
        workers = gpus or max(1, min(cores, int(memory // 2)))
    if threads is None:
        threads = max(1, cores // workers)
    return workers, threads


def local_cluster(
    workers: int | None = None,
    threads: int | None = None,
    *,
    use_gpus: bool = True,
    dashboard_address: str | None = ":0",
    processes: bool = True,
) -> Any:
    """A ``distributed`` cluster on this machine (see the module docstring)."""
    import dask
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    gpus = visible_gpus() if use_gpus else []
    workers, threads = local_sizes(workers, threads, len(gpus), machine_cores())
    with dask.config.set(SCHEDULER_CONFIG):
        if not gpus:
            return LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=processes,
                resources={"image": 1},
                dashboard_address=dashboard_address,
            )
        specs = {
            i: {
                "cls": Nanny,
                "options": {
                    "nthreads": threads,
                    "env": {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]},
                    "resources": {"GPU": 1, "image": 1},
                },
            }
            for i in range(workers)
        }
        scheduler = {"cls": Scheduler, "options": {"dashboard_address": dashboard_address}}
        return SpecCluster(workers=specs, scheduler=scheduler)


def task_resources(client: Any, asked: dict[str, float] | None) -> dict[str, float] | None:
    """What each image asks of a worker: ``asked`` (``--resources``), else ``GPU=1`` when every
    connected worker declares a GPU, ``image=1`` when every one declares that, else nothing."""
    if asked:
        return asked
    workers = client.scheduler_info().get("workers", {}).values()
    declared = [set((w.get("resources") or {}).keys()) for w in workers]
    for name in ("GPU", "image"):
        if declared and all(name in d for d in declared):
            return {name: 1}
    return None


def parse_resources(text: str | None) -> dict[str, float] | None:
    """``GPU=1,memory=8e9`` -> {"GPU": 1.0, "memory": 8e9}."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise InputError(
                f"--resources {text} is not NAME=N[,NAME=N]", "e.g. --resources GPU=1"
            ) from None
    return out


@contextmanager
def open_client(
    cluster: str | None, scheduler: str | None, threads: int | None, use_gpus: bool
) -> Iterator[Any]:
    """A ``distributed.Client`` on ``--scheduler ADDRESS`` or on a local cluster made (and
    closed) here."""
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as err:
            raise InputError(
                f"cannot reach the dask scheduler at {scheduler} ({err})",
                "check the address (tcp://HOST:8786) and that the scheduler runs",
            ) from err
        try:
            yield client
        finally:
            client.close()
        return
    made = local_cluster(parse_cluster(cluster or "local"), threads, use_gpus=use_gpus)
    try:
        with Client(made) as client:
            yield client
    finally:
        quiet = logging.getLogger("distributed")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "still alive after 4 s, killing" at the end is normal
        try:
            made.close()
        finally:
            quiet.setLevel(level)
