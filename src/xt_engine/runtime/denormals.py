"""Denormal floats flushed to zero on every CPU thread torch computes on, for the span of a run.

Values below float32's smallest normal (1.2e-38) are denormal; x86 CPUs compute with them tens
of times slower than with normal values. Attention softmaxes and activations over flat image
content (sea, slide background) produce many of them, so a region encoder runs markedly slower
on such content than on textured input. With the CPU's flush-to-zero / denormals-are-zero modes
(FTZ/DAZ) they become 0; nothing a model outputs moves by more than ~1e-38 per value, far below
fp32 rounding of any logit, so labels and stored float16 probabilities stay the same.

The modes are per thread (the MXCSR register). ``torch.set_flush_denormal`` sets the calling
thread only, not torch's OpenMP worker threads that exist (tested), so :func:`set_everywhere`
also runs libm's ``fesetenv`` with the calling thread's float environment as the body of one
OpenMP parallel region of the library torch loaded (``GOMP_parallel``, the entry point of
GCC's ``#pragma omp parallel``, which libgomp, LLVM's libomp and Intel's libiomp5 provide):
every thread of the calling thread's team takes the mode. Where no such library is loaded, or
while the interpreter shuts down, the calling thread alone is set.
:func:`flushing_share` measures which share of a parallel op's threads flush, so the reach is a
test, not an assumption.

:func:`flush_denormals` turns the modes on where they are off and restores the previous state on
exit, so a host (the napari viewer) keeps its own; :func:`flushing` applies it to the steps of a
lazy iterator: the calling thread's mode is the caller's between steps, the workers flush until
the iteration ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")

DENORMAL_BITS = 1 << 20  # float32 1.47e-39, a denormal (smallest normal: 1.18e-38)
GRAIN = 32768  # at::internal::GRAIN_SIZE: elements per thread of a parallel elementwise op
_OPENMP_NAMES = ("libgomp", "libomp", "libiomp5")
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
FENV_BYTES = 64  # >= sizeof(fenv_t) (28 bytes on x86-64 glibc)


@functools.lru_cache(maxsize=1)
def _openmp() -> Any | None:
    """The OpenMP runtime this process has loaded (torch's), or None."""
    try:
        with open("/proc/self/maps") as handle:
            paths = {line.split()[-1] for line in handle if "/" in line}
    except OSError:
        return None
    torch_dir = str(Path(torch.__file__).parent)
    for path in sorted(paths, key=lambda p: (not p.startswith(torch_dir), p)):  # torch's first
        name = path.rsplit("/", 1)[-1]
        if name.startswith(_OPENMP_NAMES) and ".so" in name:
            try:
                library = ctypes.CDLL(path)  # the loaded one: dlopen returns its handle
                entry = library.GOMP_parallel
            except (OSError, AttributeError):
                continue
            entry.argtypes = [_CALLBACK, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
            entry.restype = None
            return entry
    return None


def set_everywhere(enabled: bool) -> bool:
    """FTZ/DAZ on (``enabled``) or off on the calling thread and its OpenMP team's threads.

    The calling thread's whole float environment (``fegetenv``) is copied to every thread of
    its team by running libm's ``fesetenv`` as the parallel region's body: no Python code runs
    on the workers, so nothing there waits for the GIL (a Python callback deadlocked when it
    ran during interpreter shutdown). Returns False where the CPU has no such mode (nothing
    changed)."""
    if not torch.set_flush_denormal(enabled):
        return False
    threads = torch.get_num_threads()
    parallel = _openmp() if threads > 1 and not sys.is_finalizing() else None
    environment = _fenv()
    if parallel is not None and environment is not None:
        get, put = environment
        env = ctypes.create_string_buffer(FENV_BYTES)
        if get(env) == 0:
            parallel(ctypes.cast(put, _CALLBACK), ctypes.cast(env, ctypes.c_void_p), threads, 0)
    return True


@functools.lru_cache(maxsize=1)
def _fenv() -> tuple[Any, Any] | None:
    """libm's (fegetenv, fesetenv), or None."""
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        get, put = libm.fegetenv, libm.fesetenv
    except (OSError, AttributeError):
        return None
    get.argtypes = put.argtypes = [ctypes.c_void_p]
    get.restype = put.restype = ctypes.c_int
    return get, put


def flushing_share() -> float:
    """The share of a parallel elementwise op's output that the CPU flushed to zero: 1.0 when
    every compute thread flushes denormals, 0.0 when none does (in between: some threads)."""
    return float((_denormals(torch.get_num_threads() * 2 * GRAIN) * 1.5 == 0).float().mean())


def _flushes_here() -> bool:
    """Whether the calling thread flushes (a one-element op runs on it alone)."""
    return bool((_denormals(1) * 1.5).item() == 0.0)


def _denormals(n: int) -> torch.Tensor:
    """``n`` float32 denormals, written as bits (a float conversion would flush them)."""
    return torch.full((n,), DENORMAL_BITS, dtype=torch.int32).view(torch.float32)


@contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[bool]:
    """Within the block every compute thread flushes denormals (``enabled``); yields whether
    they do. On exit the threads are as they were: a host that flushed everywhere already is
    left alone; otherwise the workers are turned off and the calling thread gets back its own
    mode."""
    if not enabled:
        yield False
        return
    if flushing_share() == 1.0:  # already (the host's choice): left as it is
        yield True
        return
    here = _flushes_here()
    supported = set_everywhere(True)
    try:
        yield supported
    finally:
        if supported:
            set_everywhere(False)
            torch.set_flush_denormal(here)


def flushing(steps: Iterator[T], enabled: bool = True) -> Generator[T, None, None]:
    """``steps`` with each ``next`` computed with denormals flushed on every compute thread.

    The workers are set once (:func:`flush_denormals` around the whole iteration, restored when
    it ends or is closed); the calling thread's own mode, a register write, is switched around
    each ``next``, so the consumer's code between steps runs in its own mode. (Setting the
    workers costs a parallel region: done at every step, it cost the demo model 7% of its
    throughput, docs/benchmarks.md.)"""
    if not enabled:
        yield from steps
        return
    here = _flushes_here()  # the caller's own mode, kept between steps
    with flush_denormals() as flushed:
        torch.set_flush_denormal(here)
        try:
            while True:
                torch.set_flush_denormal(flushed)
                try:
                    item = next(steps)
                except StopIteration:
                    return
                finally:
                    torch.set_flush_denormal(here)
                yield item
        finally:
            close = getattr(steps, "close", None)
            if close is not None:
                close()


__all__ = ["flush_denormals", "flushing", "flushing_share", "set_everywhere"]
