"""Training options for context: the token probe (deep supervision), position scale, crops
without rotation, and the context suite's recipes."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from xt_engine import ConfigError, XTConfig, create_model, load_checkpoint
from xt_engine.synthetic import make_context_scene
from xt_engine.tasks.base import crops_to_regions
from xt_engine.train.config import TrainConfig
from xt_engine.train.context_probe import probe_loss, token_targets
from xt_engine.train.data import sample_crop
from xt_engine.train.recipes import RECIPES, context_task_pairs, context_task_recipe
from xt_engine.train.trainer import train

MODEL = {
    "tiling": {"region_size": 64},
    "region_encoder": {"name": "test_convnext", "in_chans": 1},
    "context_encoder": {"kind": "transformer_xl", "dim": 32, "depth": 1, "chunk_regions": 2},
    "head": {"task": "segmentation", "num_classes": 4},
}


def test_token_targets_mark_the_classes_of_each_patch():
    masks = torch.zeros(1, 128, 128, dtype=torch.long)
    masks[0, 5, 5] = 2  # region (0, 0), token (0, 0)
    masks[0, 40, 100] = 3  # region (0, 1), token (1, 1)
    masks[0, 64:, 64:] = -1  # region (1, 1): padding
    presence, valid = token_targets(masks, 64, (2, 2), 4)
    assert presence.shape == (16, 4) and valid.shape == (16,)
    assert presence[0].tolist() == [1, 0, 1, 0]  # background and class 2
    assert presence[4 + 3].tolist() == [1, 0, 0, 1]
    assert presence[1].tolist() == [1, 0, 0, 0]
    assert not valid[12:].any() and valid[:12].all()


def test_probe_loss_is_balanced_and_ignores_padding():
    presence = torch.zeros(100, 2)
    presence[:, 0] = 1
    presence[:3, 1] = 1  # a rare class in 3 of 100 tokens
    valid = torch.ones(100, dtype=torch.bool)
    uniform = probe_loss(torch.zeros(100, 2), presence, valid)
    assert math.isclose(uniform.item(), math.log(2), rel_tol=1e-6)
    perfect = probe_loss((presence * 2 - 1) * 20, presence, valid)
    assert perfect.item() < 1e-6
    # missing the 3 rare tokens costs as much as missing the 97 others would
    rare_wrong = (presence * 2 - 1) * 20
    rare_wrong[:3, 1] = -20
    common_wrong = (presence * 2 - 1) * 20
    common_wrong[3:, 1] = 20
    a = probe_loss(rare_wrong, presence, valid).item()
    b = probe_loss(common_wrong, presence, valid).item()
    assert math.isclose(a, b, rel_tol=1e-4)
    # padded tokens count for nothing, whatever their logits
    padded = torch.cat([presence, torch.ones(5, 2)])
    logits = torch.cat([(presence * 2 - 1) * 20, torch.full((5, 2), -50.0)])
    keep = torch.cat([valid, torch.zeros(5, dtype=torch.bool)])
    assert probe_loss(logits, padded, keep).item() < 1e-6


def test_position_scale_zero_removes_positions_and_the_default_is_a_tenth():
    torch.manual_seed(0)
    base = create_model(MODEL).eval()
    scaled_cfg = copy.deepcopy(MODEL)
    scaled_cfg["context_encoder"]["position_scale"] = 0.0
    unscaled = create_model(scaled_cfg).eval()
    unscaled.load_state_dict(base.state_dict())
    pixels, rc = crops_to_regions(torch.rand(1, 1, 128, 128), 64)
    with torch.no_grad():
        _, with_pos, _ = base.encode(pixels, rc)
        _, without, _ = unscaled.encode(pixels, rc)
        _, shifted, _ = unscaled.encode(pixels, rc + 7)
    assert not torch.allclose(with_pos, without)
    torch.testing.assert_close(without, shifted)  # no position left in the tokens
    assert XTConfig.from_dict(MODEL).context_encoder.position_scale == 0.1
    bad = copy.deepcopy(MODEL)
    bad["context_encoder"]["position_scale"] = -1.0
    with pytest.raises(ConfigError, match="position_scale"):
        XTConfig.from_dict(bad)


def test_crops_without_augmentation_keep_their_orientation():
    pairs = context_task_pairs("offset", [3], {"size": 512, "region": 64})
    a = sample_crop(pairs[0], 512, False, np.random.default_rng(0), augment=False)[1]
    assert (a == make_context_scene("offset", 512, 64, seed=3).mask).all()
    # the random draws are the same with and without augmentation: same crop positions
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(4):
        sample_crop(pairs[0], 256, False, rng1, augment=True)
        sample_crop(pairs[0], 256, False, rng2, augment=False)
    assert rng1.random() == rng2.random()
    with pytest.raises(ConfigError, match="context_aux_weight"):
        TrainConfig.from_dict({"context_aux_weight": -1}).validate(64)


def test_training_with_the_probe_saves_a_plain_model_and_resumes(tmp_path: Path):
    pairs = context_task_pairs("global_cue", range(4), {"size": 128, "region": 64})
    cfg = {
        "crop_size": 128,
        "batch_size": 2,
        "max_steps": 4,
        "val_every": 2,
        "val_crops": 2,
        "context_aux_weight": 1.0,
        "augment": False,
        "balance_classes": False,
    }
    config = XTConfig.from_dict(MODEL)

    def run(out: Path, steps: int, resume: bool = False) -> list[float]:
        torch.manual_seed(0)
        c = TrainConfig.from_dict(cfg | {"max_steps": steps})
        return [e.loss for e in train(config, c, pairs[:3], pairs[3:], out, resume=resume)]

    whole = run(tmp_path / "whole.safetensors", 4)
    assert all(math.isfinite(v) for v in whole)
    model = load_checkpoint(tmp_path / "whole.safetensors")
    assert not any("probe" in key for key in model.state_dict())  # training only
    assert sorted(model.state_dict()) == sorted(create_model(MODEL).state_dict())
    # two steps, then resumed to four: the same losses and weights as four at once
    first = run(tmp_path / "split.safetensors", 2)
    rest = run(tmp_path / "split.safetensors", 4, resume=True)
    assert first + rest == pytest.approx(whole, rel=1e-5)
    resumed = load_checkpoint(tmp_path / "split.safetensors").state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(resumed[key], value)
    # resuming with the probe or class balancing switched is another run: refused by name
    for change, named in (
        ({"context_aux_weight": 0.0}, "probe"),
        ({"balance_classes": True}, "balance"),
        ({"augment": True}, "augment"),
    ):
        c = TrainConfig.from_dict(cfg | {"max_steps": 6} | change)
        with pytest.raises(ConfigError, match=named):
            next(
                iter(
                    train(
                        config, c, pairs[:3], pairs[3:], tmp_path / "split.safetensors", resume=True
                    )
                )
            )


def test_suite_recipes_are_valid_configs():
    for name in ("context-near-cue", "context-global-cue", "context-offset", "context-count"):
        data = copy.deepcopy(RECIPES[name])
        data.pop("data")
        train_config = TrainConfig.from_dict(data.pop("train"))
        train_config.validate(64)
        XTConfig.from_dict(data)
        # the suite's table is measured with xt train's defaults of the probe and balancing
        assert "context_aux_weight" not in RECIPES[name]["train"]
        assert train_config.context_aux_weight == TrainConfig().context_aux_weight == 0.1
        assert train_config.balance_classes and TrainConfig().balance_classes
    with pytest.raises(ConfigError, match="no context task"):
        context_task_recipe("nope")


def test_class_balancer_mixes_the_classes_some_images_hold():
    from xt_engine.train.data import ClassBalancer

    pairs = context_task_pairs("global_cue", range(12), {"size": 256, "region": 64})
    balancer = ClassBalancer(pairs)
    assert balancer.classes == [1, 2]  # the cue (3) is in every scene: nothing to balance
    rng = np.random.default_rng(0)
    for _ in range(20):
        classes = balancer.batch_classes(2, rng)
        assert sorted(classes) == [1, 2]
        for cls in classes:
            assert cls in set(pairs[balancer.pick(cls, rng)].positives[:, 2].tolist())
    # every scene of near_cue holds both A and B: images are drawn uniformly
    near = ClassBalancer(context_task_pairs("near_cue", range(4), {"size": 512, "region": 64}))
    assert near.batch_classes(3, rng) == [None, None, None]


def test_demo_sar_recipe_states_the_bundled_models_recorded_training():
    """The bundled checkpoint records the train section it was trained with; the recipe must
    give the same values (the probe and balancing off, recorded as such)."""
    from xt_engine.weights.checkpoint import read_checkpoint_config
    from xt_engine.weights.loading import bundled_checkpoint

    path = bundled_checkpoint("xt_demo_sar")
    assert path is not None
    _, extra = read_checkpoint_config(path)
    recipe = TrainConfig.from_dict(RECIPES["demo-sar"]["train"])
    for key, value in extra["train"].items():
        ours = getattr(recipe, key)
        assert (list(ours) if isinstance(ours, tuple) else ours) == value, key
    assert recipe.context_aux_weight == 0.0 and not recipe.balance_classes
    assert extra["train"]["context_aux_weight"] == 0.0 and not extra["train"]["balance_classes"]
