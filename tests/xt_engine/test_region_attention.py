from __future__ import annotations

import numpy as np
import pytest

from xt_engine import ConfigError, create_model
from xt_engine.models.registry import model_config
from xt_engine.runtime.region_attention import region_attention


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (256, 384, 3), dtype=np.uint8)  # 4 x 6


def _token_rows(grid_cols: int, region: int, gh: int = 2) -> slice:
    return slice(region // grid_cols * gh, region // grid_cols * gh + gh)


def test_causal_region_attends_only_backwards(image: np.ndarray) -> None:
    model = create_model("test_convnext_txl")
    result = region_attention(image, model, region_index=14, batch_size=4)  # row 2, col 2
    w = result.weights
    assert w.shape == (8, 12) and result.token_stride == 32
    assert w.sum() == pytest.approx(1.0, abs=1e-5)
    # keys after the clicked region's batch (regions 16..23: rows 2-3) get nothing
    flat = w.reshape(4, 2, 6, 2).transpose(0, 2, 1, 3).reshape(24, 4).sum(axis=1)
    assert flat[16:].sum() == 0 and flat[:12].sum() > 0


def test_bidirectional_region_attends_both_ways(image: np.ndarray) -> None:
    config = model_config("test_convnext_txl")
    config.context_encoder.bidirectional = True
    model = create_model(config)
    w = region_attention(image, model, region_index=9, batch_size=2).weights
    flat = w.reshape(4, 2, 6, 2).transpose(0, 2, 1, 3).reshape(24, 4).sum(axis=1)
    assert w.sum() == pytest.approx(1.0, abs=1e-5)
    assert flat[:8].sum() > 0 and flat[10:].sum() > 0


@pytest.mark.parametrize("name", ["test_convnext_sliding", "test_convnext_mamba"])
def test_other_kinds(image: np.ndarray, name: str) -> None:
    w = region_attention(image, create_model(name), region_index=3, batch_size=4).weights
    assert np.isfinite(w).all() and w.sum() == pytest.approx(1.0, abs=1e-5)


def test_models_without_attention_say_so(image: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="exports no attention matrix"):
        region_attention(image, create_model("test_convnext_none"), region_index=0)
