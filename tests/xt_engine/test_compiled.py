"""``compile=True`` (xt_engine.runtime.compiled): the same answer as eager, the caller's model
untouched, a compile failure reported as a ConfigError naming --compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xt_engine import ConfigError, RegionDone, create_model, run_inference
from xt_engine.models import model_config
from xt_engine.runtime import compiled


def _model(name: str, **head: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = model_config(name).to_dict()
    cfg["head"] |= head
    return create_model(cfg).eval()


def _image() -> np.ndarray:
    return np.random.default_rng(0).random((300, 260, 3)).astype(np.float32)


def _run(model, **kw) -> dict[int, RegionDone]:
    events = run_inference(_image(), model, batch_size=3, foreground="none", **kw)
    return {e.region.index: e for e in events if isinstance(e, RegionDone)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["test_convnext_txl", "test_convnext_txl_bidir"])
def test_compiled_segmentation_equals_eager(name: str) -> None:
    model = _model(name)
    eager = _run(model, probabilities=True)
    fast = _run(model, probabilities=True, compile=True)
    assert eager.keys() == fast.keys() and len(eager) == 25
    compared = total = 0
    for index, done in eager.items():
        assert done.probabilities is not None and fast[index].probabilities is not None
        # equal labels wherever the eager run's top two classes are further apart than fp32
        # rounding can move them (this untrained model's near-ties flipped one pixel of 78000)
        top2 = np.sort(done.probabilities.astype(np.float32), axis=0)[-2:]
        clear = top2[1] - top2[0] > 1e-3
        np.testing.assert_array_equal(fast[index].labels[clear], done.labels[clear])
        compared, total = compared + int(clear.sum()), total + clear.size
        np.testing.assert_allclose(
            fast[index].probabilities.astype(np.float32),
            done.probabilities.astype(np.float32),
            atol=2e-3,  # float16 probabilities: one step of their rounding
        )
    assert compared > 0.8 * total  # most pixels are compared


@pytest.mark.slow
def test_compiled_detection_equals_eager() -> None:
    model = _model("test_convnext_txl_det", detection_threshold=0.01)  # untrained: low scores
    eager, fast = _run(model), _run(model, compile=True)
    assert sum(len(done.detections) for done in eager.values()) > 0
    for index, done in eager.items():
        a, b = done.detections, fast[index].detections
        assert a is not None and b is not None  # (M, 6): y, x, class, score, height, width
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, atol=1e-3)


@pytest.mark.slow
def test_model_unchanged_and_view_shared() -> None:
    model = _model("test_convnext_txl")
    keys = list(model.state_dict())
    parts = {name: getattr(model, name) for name in compiled.COMPILED_PARTS}
    _run(model, compile=True)
    assert list(model.state_dict()) == keys
    assert all(getattr(model, name) is part for name, part in parts.items())
    view = compiled.compiled_view(model)
    assert compiled.compiled_view(model) is view  # cached: a second run reuses the code
    assert view.region_encoder.part is model.region_encoder
    assert view.context_encoder is model.context_encoder  # left eager
    assert view.input_proj.part.bias is model.input_proj.bias  # the weights are shared


def test_compile_failure_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(compiled, "BACKEND", failing_backend)
    model = _model("test_convnext_none")
    with pytest.raises(ConfigError, match="--compile") as info:
        _run(model, compile=True)
    assert "region_encoder" in str(info.value)


@pytest.mark.slow
def test_compiled_run_follows_a_change_of_the_weights() -> None:
    """Frozen (constant-folded) weights must not outlive an in-place change of the model's."""
    model = _model("test_convnext_txl")
    _run(model, compile=True)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.mul_(-1.5)
        for parameter in model.region_encoder.parameters():
            parameter.mul_(0.5)
    eager, fast = _run(model, probabilities=True), _run(model, probabilities=True, compile=True)
    for index, done in eager.items():
        np.testing.assert_array_equal(fast[index].labels, done.labels)
        np.testing.assert_allclose(
            fast[index].probabilities.astype(np.float32),
            done.probabilities.astype(np.float32),
            atol=2e-3,
        )
