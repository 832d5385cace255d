"""Parity with the official xT code: an imported checkpoint computes what xT computes.

The reference vectors (tests/data/xt-reference, a copy of the team's shared
vectors/xt-reference; see its README.md) hold, per decoder
kind, the names and shapes of a released state dict, a seed from which ``xtvec.py`` makes every
tensor, four 512 x 512 RGB PNGs (2 x 2 regions of 256 px) and the 284 class logits the official
xT code (bair-climate-initiative/xT @ 4e79e41, CPU, fp32) returned for each. The test goes the
user's way: the released checkpoint layout -> ``xt import-xt-checkpoint`` -> ``xt infer`` on
the PNG -> the class probabilities recorded in the output store.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from xt_engine.cli import main

VECTORS = Path(__file__).parents[1] / "data" / "xt-reference"
CASES = ("hyper_512_256-seed11", "mamba_512_256-seed11")
TOLERANCE = 1e-3  # on log-probabilities; a faithful fp32 implementation agrees to ~1e-5


def _xtvec() -> object:
    spec = importlib.util.spec_from_file_location("xtvec", VECTORS / "xtvec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log_softmax(logits: list[float]) -> np.ndarray:
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max()
    return shifted - math.log(np.exp(shifted).sum())


@pytest.mark.slow
@pytest.mark.skipif(not VECTORS.is_dir(), reason=f"the xT reference vectors are absent ({VECTORS})")
@pytest.mark.parametrize("name", CASES)
def test_imported_checkpoint_matches_the_official_xt_logits(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = json.loads((VECTORS / f"{name}.json").read_text())
    weights = meta["weights"]
    arrays = _xtvec().state_dict(weights["params"], weights["seed"])  # type: ignore[attr-defined]
    released = tmp_path / f"{name}.pth"
    torch.save(
        {"state_dict": {"module." + k: torch.from_numpy(v) for k, v in arrays.items()}}, released
    )
    imported = tmp_path / f"{name}.safetensors"
    assert main(["import-xt-checkpoint", str(released), str(imported)]) == 0

    worst = []
    for i, case in enumerate(meta["cases"]):
        store = tmp_path / f"case{i}.zarr"
        image = VECTORS / case["input"]
        args = ["infer", str(image), "--model", str(imported), "--out", str(store)]
        assert main([*args, "--device", "cpu", "--precision", "fp32"]) == 0
        stored = zarr.open_group(str(store), mode="r").attrs["xt"]["classification"]
        log_p = np.log(np.asarray(stored["probabilities"], dtype=np.float64))
        log_p_ref = _log_softmax(case["logits"])
        assert log_p.shape == log_p_ref.shape == (meta["model"]["num_classes"],)
        delta = float(np.abs(log_p - log_p_ref).max())
        top1, top1_ref = int(log_p.argmax()), int(log_p_ref.argmax())
        worst.append(delta)
        with capsys.disabled():
            print(
                f"\n{name} {case['input']}: max |d log p| = {delta:.2e}, top-1 {top1} / {top1_ref}"
            )
        assert delta <= TOLERANCE, f"{case['input']}: max |d log p| = {delta:.2e}"
        assert top1 == top1_ref == stored["class"]
    assert len(worst) == 4
