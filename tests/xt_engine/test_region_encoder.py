from __future__ import annotations

import numpy as np
import pytest
import torch

from xt_engine import RegionDone, create_model, run_inference
from xt_engine.config import RegionEncoderConfig
from xt_engine.models.region_encoder import RegionEncoder
from xt_engine.models.registry import model_config


@pytest.mark.parametrize(
    ("name", "in_chans"),
    [
        ("test_convnext", 1),
        ("test_vit", 2),
        ("swinv2_tiny_window8_256", 2),  # channels-last stages, made NCHW
        ("hiera_tiny_224", 5),  # needs img_size
        ("vit_tiny_patch16_224", 3),
    ],
)
def test_families_give_nchw_pyramids(name: str, in_chans: int) -> None:
    encoder = RegionEncoder(
        RegionEncoderConfig(name=name, in_chans=in_chans), region_size=64
    ).eval()
    with torch.inference_mode():
        features = encoder(torch.rand(2, in_chans, 64, 64))
    assert len(features) == len(encoder.channels) == len(encoder.reductions)
    for feature, channels, reduction in zip(
        features, encoder.channels, encoder.reductions, strict=True
    ):
        assert feature.shape == (2, channels, 64 // reduction, 64 // reduction)


def test_integer_inputs_are_scaled_by_dtype() -> None:
    model = create_model("test_convnext_none").eval()
    rng = np.random.default_rng(0)
    as_uint16 = rng.integers(0, 65536, size=(64, 64, 3), dtype=np.uint16)
    as_float = as_uint16.astype(np.float32) / 65535.0

    def labels(image: np.ndarray) -> np.ndarray:
        return next(e.labels for e in run_inference(image, model) if isinstance(e, RegionDone))

    np.testing.assert_array_equal(labels(as_uint16), labels(as_float))


def test_config_mean_std_are_model_buffers() -> None:
    cfg = model_config("test_convnext_none").to_dict()
    cfg["region_encoder"] |= {"in_chans": 2, "mean": [0.1, 0.2], "std": [0.5]}
    model = create_model(cfg)
    assert model.pixel_mean.flatten().tolist() == pytest.approx([0.1, 0.2])
    assert model.pixel_std.flatten().tolist() == pytest.approx([0.5, 0.5])
    assert "pixel_mean" in model.state_dict()
