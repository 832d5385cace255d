"""Untrained weights are never presented as a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from xt_engine import ConfigError
from xt_engine.cli import main
from xt_engine.weights.loading import load_model, user_models, weights_record


def test_the_registry_records_which_weights_exist() -> None:
    assert weights_record("xt_demo_sar").trained
    assert "xt_demo_sar.safetensors" in weights_record("xt_demo_sar").source
    assert not weights_record("xt_swinv2_tiny_txl").trained
    assert not any(name.startswith("test_") for name in user_models())


def test_xt_models_says_which_are_untrained(capsys) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines[:-1]}
    assert rows["xt_demo_sar"] == "trained" and rows["xt_swinv2_tiny_txl"] == "UNTRAINED"
    assert not any(name.startswith("test_") for name in rows)
    assert "--allow-untrained" in lines[-1]


def test_an_untrained_architecture_is_refused_unless_asked(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="without trained weights.*--allow-untrained"):
        load_model("xt_convnext_atto_txl")
    tif = tmp_path / "scene.tif"
    tifffile.imwrite(tif, np.zeros((64, 64, 3), np.uint8))
    args = ["infer", str(tif), "--model", "test_convnext_none", "--out", str(tmp_path / "a.zarr")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-untrained" in err[0]
    assert not (tmp_path / "a.zarr").exists()  # refused before anything is written
    assert main([*args, "--allow-untrained"]) == 0
    xt = zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs["xt"]
    assert xt["trained_weights"] is False and len(xt["determinants"]["weights_sha256"]) == 64
    trained = ["infer", str(tif), "--model", "xt_demo_sar", "--out", str(tmp_path / "b.zarr")]
    tifffile.imwrite(tif, np.zeros((64, 64), np.uint8))
    assert main(trained) == 0
    assert zarr.open_group(str(tmp_path / "b.zarr"), mode="r").attrs["xt"]["trained_weights"]
