"""The context encoder's defaults are the suite recipe's; napari-xt/1 files keep their meaning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from xt_engine import XTConfig, create_model
from xt_engine.context_config import V1_DEFAULTS, ContextEncoderConfig
from xt_engine.errors import CheckpointError
from xt_engine.synthetic.context_tasks import CONTEXT_TASKS
from xt_engine.train.recipes import DEMO_SAR, context_task_recipe
from xt_engine.weights.checkpoint import (
    FORMAT,
    V1,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from xt_engine.weights.loading import bundled_checkpoint

MEASURED = ("bidirectional", "distance_bias", "relative_range", "position_scale")
MODEL = {
    "tiling": {"region_size": 64},
    "region_encoder": {"name": "test_convnext", "in_chans": 1},
    "context_encoder": {"kind": "transformer_xl", "dim": 32, "depth": 1},
    "head": {"task": "segmentation", "num_classes": 3},
}


def _context(data: dict) -> dict:
    config = XTConfig.from_dict({k: v for k, v in data.items() if k not in ("train", "data")})
    return {name: getattr(config.context_encoder, name) for name in MEASURED}


@pytest.mark.parametrize("task", CONTEXT_TASKS)
def test_a_config_without_context_options_gets_the_suites(task: str) -> None:
    """What `xt train --config` gives a config that leaves them out is what the suite recipe
    (the table in docs/benchmarks.md) trained with."""
    assert _context(MODEL) == _context(context_task_recipe(task))
    assert _context(MODEL) == {
        "bidirectional": True,
        "distance_bias": True,
        "relative_range": 6,
        "position_scale": 0.1,
    }


@pytest.mark.parametrize(
    ("context", "head", "expected"),
    [
        ({"kind": "mamba"}, "segmentation", (True, False, 0)),
        # null: the kind's default (what the refusal of a bias for another kind suggests)
        (
            {"kind": "mamba", "distance_bias": None, "relative_range": None},
            "segmentation",
            (True, False, 0),
        ),
        ({"kind": "hyper"}, "detection", (True, False, 0)),
        ({"kind": "none"}, "segmentation", (False, False, 0)),
        ({"kind": "transformer_xl"}, "classification", (False, True, 6)),
        (
            {"kind": "transformer_xl", "bidirectional": False, "relative_range": 2},
            "segmentation",
            (False, True, 2),
        ),
        ({"kind": "transformer_xl", "distance_bias": False}, "detection", (True, False, 6)),
    ],
)
def test_unset_options_follow_the_kind_and_the_task(
    context: dict, head: str, expected: tuple[bool, bool, int]
) -> None:
    config = XTConfig.from_dict(MODEL | {"context_encoder": context, "head": {"task": head}})
    ctx = config.context_encoder
    assert (ctx.bidirectional, ctx.distance_bias, ctx.relative_range) == expected
    assert XTConfig.from_dict(config.to_dict()) == config  # stored resolved


def test_a_context_config_alone_is_causal() -> None:
    assert not ContextEncoderConfig().bidirectional
    assert ContextEncoderConfig(kind="mamba").relative_range == 0  # valid without the biases
    ContextEncoderConfig(kind="mamba").validate()


def _rewritten(path: Path, fmt: str, drop: tuple[str, ...]) -> Path:
    """The checkpoint at ``path`` with format ``fmt`` and without the context fields ``drop``."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    stored = json.loads(metadata["xt_config"])
    for name in drop:
        del stored["context_encoder"][name]
    out = path.with_name(f"{fmt.replace('/', '-')}.safetensors")
    save_file(state, str(out), metadata=metadata | {"format": fmt, "xt_config": json.dumps(stored)})
    return out


def test_a_v1_file_reads_what_it_leaves_out_with_that_formats_defaults(tmp_path: Path) -> None:
    v1_model = MODEL | {"context_encoder": MODEL["context_encoder"] | V1_DEFAULTS}
    torch.manual_seed(0)
    model = create_model(v1_model).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    assert read_checkpoint_config(path)[0] == model.config  # format 2 states every field
    old = _rewritten(path, V1, tuple(V1_DEFAULTS))
    assert read_checkpoint_config(old)[0] == model.config
    loaded = load_checkpoint(old)
    x = torch.rand(1, 2, 1, 64, 64)
    rc = torch.tensor([[0, 0], [0, 1]])
    with torch.inference_mode():
        expected, _ = model(x, rc, model.init_state())
        got, _ = loaded(x, rc, loaded.init_state())
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=0)
    # read with today's defaults, the same header is another model (the relative bias's
    # tables, which the file lacks)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(_rewritten(path, FORMAT, tuple(V1_DEFAULTS)))


def test_the_bundled_model_is_v2_and_trained_with_the_defaults() -> None:
    """The bundled demo model states every context field (format 2), and they are the context
    encoder's defaults: the demo-sar recipe states none of relative_range and position_scale,
    and the registered architecture is the file's."""
    path = bundled_checkpoint("xt_demo_sar")
    assert path is not None
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == FORMAT
    stored = json.loads(metadata["xt_config"])["context_encoder"]
    assert (stored["relative_range"], stored["position_scale"]) == (6, 0.1)
    assert not {"relative_range", "position_scale"} & set(DEMO_SAR["context_encoder"])
    config, _ = read_checkpoint_config(path)
    assert _context(DEMO_SAR) == {name: getattr(config.context_encoder, name) for name in MEASURED}
    assert _context(DEMO_SAR) == _context(MODEL)
