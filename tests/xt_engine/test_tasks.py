"""The task registry: one task object per head.task, injected into the model; capabilities."""

from __future__ import annotations

import pytest
import torch

from xt_engine import ConfigError, create_model
from xt_engine.config import TASKS as CONFIG_TASKS
from xt_engine.models.registry import model_config
from xt_engine.tasks import TASKS, RegionResult, task_for
from xt_engine.tiling import RegionGrid


def test_every_configurable_task_is_registered_with_its_capabilities() -> None:
    assert set(TASKS) == set(CONFIG_TASKS)
    caps = {n: (t.pixel_outputs, t.image_level, t.trainable) for n, t in TASKS.items()}
    assert caps == {
        "segmentation": (True, False, True),
        "detection": (False, False, True),
        "classification": (False, True, False),
    }
    config = model_config("test_convnext_txl_det")
    assert task_for(config) is task_for(config.head) is task_for("detection")
    with pytest.raises(ConfigError, match="head.task='panoptic' is unknown"):
        task_for("panoptic")


@pytest.mark.parametrize(
    "name", ["test_convnext_txl", "test_convnext_txl_det", "test_convnext_txl_cls"]
)
def test_the_model_is_composed_with_its_task(name: str) -> None:
    model = create_model(name)
    assert model.task is task_for(model.config)
    assert not any(k.startswith("task") for k in model.state_dict())  # the task holds no weights


def test_image_level_tasks_have_no_region_results_and_dense_tasks_no_finish() -> None:
    model = create_model("test_convnext_txl_cls").eval()
    rc = torch.tensor([[0, 0], [0, 1]])
    with torch.inference_mode():
        out, state = model(torch.rand(1, 2, 3, 64, 64), rc, model.init_state())
    regions = [RegionGrid.for_image((64, 128), 64).region(i) for i in range(2)]
    assert out.logits is None and out.heatmap is None
    assert model.task.region_results(model, regions, out) == [RegionResult(), RegionResult()]
    assert RegionResult() == RegionResult(None, None, None)
    with pytest.raises(ValueError, match="finish"):
        create_model("test_convnext_txl").finish(state)
