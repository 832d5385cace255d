"""How many CPU threads a run takes: by default the cores other processes leave idle.

torch's OpenMP threads wait for each other at the end of every parallel region; when another
process holds a core, a thread descheduled there stalls all the others, so a run that takes
every core of a busy machine loses far more than its fair share. ``auto`` samples the CPU
counters of the cores this process may use (``/proc/stat``, over ``SAMPLE_S``) and takes the
idle ones (at least one); elsewhere (no ``/proc/stat``) it takes torch's default. ``--threads N``
fixes it.
"""

from __future__ import annotations

import os
import time

import torch

from xt_engine.errors import InputError

SAMPLE_S = 0.25


def _cpu_times(cpus: set[int]) -> tuple[float, float] | None:
    """(idle, total) jiffies summed over ``cpus``, None without /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    idle = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]
        idle += values[3] + values[4]  # idle + iowait
        total += sum(values)
    return idle, total


def idle_cores(sample_s: float = SAMPLE_S) -> float | None:
    """How many of this process's cores were idle over ``sample_s`` (None: unknown)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    first = _cpu_times(cpus)
    if first is None or first[1] == 0:
        return None
    time.sleep(sample_s)
    second = _cpu_times(cpus)
    if second is None or second[1] <= first[1]:
        return None
    return len(cpus) * (second[0] - first[0]) / (second[1] - first[1])


def choose_threads(spec: str | int | None) -> int:
    """The thread count for ``spec``: ``auto`` / None (idle cores, at least 1) or a number."""
    if spec is None or spec == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        idle = idle_cores()
        if idle is None or cores is None:
            return torch.get_num_threads()
        return max(1, min(cores, int(idle + 0.5)))
    try:
        threads = int(spec)
    except ValueError as err:
        raise InputError(f"--threads {spec!r} is not a number", "use auto or 1, 2, ...") from err
    if threads < 1:
        raise InputError(f"--threads {threads} < 1", "use auto or 1, 2, ...")
    return threads


def use_threads(spec: str | int | None) -> int:
    """Set torch's intra-op threads for ``spec``; returns the count."""
    threads = choose_threads(spec)
    torch.set_num_threads(threads)
    return threads
