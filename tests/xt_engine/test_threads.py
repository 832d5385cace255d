"""The run's CPU thread count (xt_engine.runtime.threads): idle cores by default, fixed by
--threads."""

from __future__ import annotations

import os

import pytest
import torch

from xt_engine import InputError
from xt_engine.runtime import threads


def test_auto_takes_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    for idle, want in ((0.0, 1), (0.4, 1), (cores - 0.6, max(1, cores - 1)), (cores, cores)):
        monkeypatch.setattr(threads, "idle_cores", lambda idle=idle: idle)
        assert threads.choose_threads("auto") == want
    monkeypatch.setattr(threads, "idle_cores", lambda: None)  # no /proc/stat: torch's choice
    assert threads.choose_threads(None) == torch.get_num_threads()


def test_idle_cores_reads_this_machine() -> None:
    idle = threads.idle_cores(0.05)
    assert idle is None or 0.0 <= idle <= len(os.sched_getaffinity(0)) + 1e-6


def test_fixed_counts_and_bad_values() -> None:
    before = torch.get_num_threads()
    try:
        assert threads.use_threads("1") == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in ("0", "many", "-2"):
        with pytest.raises(InputError, match="--threads"):
            threads.choose_threads(bad)
