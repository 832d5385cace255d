from __future__ import annotations

import pytest

from xt_engine import ConfigError, XTConfig, create_model

MINIMAL = {
    "tiling": {"region_size": 256},
    "region_encoder": {"name": "convnext_atto", "in_chans": 3, "weights": None},
    "context_encoder": {"kind": "transformer_xl"},
    "head": {"task": "segmentation", "num_classes": 4},
}


def test_minimal_dict_fills_defaults_and_round_trips() -> None:
    config = XTConfig.from_dict(MINIMAL)
    assert config.tiling.region_size == 256
    assert config.head.num_classes == 4
    assert config.context_encoder.memory_tokens == 512  # a default
    assert XTConfig.from_dict(config.to_dict()) == config


def test_minimal_dict_builds_a_model() -> None:
    model = create_model(MINIMAL)
    assert model.region_encoder.channels == [40, 80, 160, 320]
    assert model.token_grid == (8, 8)


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"context_encoder": {"kind": "lstm"}}, "transformer_xl"),
        ({"head": {"task": "depth"}}, "segmentation"),
        ({"tiling": {"region_size": 100}}, "region_size"),
        ({"bogus": {}}, "bogus"),
        ({"head": {"num_classes": 3, "class_names": ["a"]}}, "class_names"),
        ({"region_encoder": {"nme": "x"}}, "nme"),
    ],
)
def test_bad_fields_are_named(patch: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        XTConfig.from_dict({**MINIMAL, **patch})


def test_unknown_timm_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a timm model"):
        create_model({**MINIMAL, "region_encoder": {"name": "no_such_net_v9"}})


@pytest.mark.parametrize("kind", ["transformer_xl", "hyper", "mamba", "sliding_window", "none"])
def test_minimal_dict_accepts_every_context_kind(kind: str) -> None:
    import torch

    model = create_model({**MINIMAL, "context_encoder": {"kind": kind}}).eval()
    assert model.config.context_encoder.kind == kind
    with torch.inference_mode():
        out, _ = model(
            torch.rand(1, 2, 3, 256, 256), torch.tensor([[0, 0], [0, 1]]), model.init_state()
        )
    assert out.logits.shape == (2, 4, 256, 256)
