"""Pass 1's region features kept for pass 2 (xt_engine.runtime.feature_cache): the same results
for any budget, and the region encoder runs once over the kept steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xt_engine import CancelToken, Finished, InputError, RegionDone, create_model, run_inference
from xt_engine.models import model_config
from xt_engine.runtime import feature_cache
from xt_engine.runtime.feature_cache import FeatureCache


def _bidirectional(chunk_regions: int = 4) -> torch.nn.Module:
    """A two-pass model whose steps (chunks of 4 regions) are fewer regions than the image."""
    cfg = model_config("test_convnext_txl_bidir").to_dict()
    cfg["context_encoder"]["chunk_regions"] = chunk_regions
    torch.manual_seed(0)
    return create_model(cfg).eval()


def _image(nan_corner: bool = False) -> np.ndarray:
    rng = np.random.default_rng(3)
    image = rng.random((300, 330, 3)).astype(np.float32)  # 5 x 6 regions of 64 px
    if nan_corner:  # pixels without data in regions of the first and second steps (4 each)
        image[5:40, 10:90] = np.nan
        image[5:40, 260:320] = np.nan  # regions 4 and 5: the second step
    return image


def _run(model, image, **kw) -> tuple[dict, dict, int]:
    """Labels and probabilities per region, and how many regions the region encoder saw."""
    seen = [0]
    handle = model.region_encoder.register_forward_hook(
        lambda _m, inputs, _o: seen.__setitem__(0, seen[0] + inputs[0].shape[0])
    )
    try:
        events = list(run_inference(image, model, batch_size=3, probabilities=True, **kw))
    finally:
        handle.remove()
    assert isinstance(events[-1], Finished)
    done = [e for e in events if isinstance(e, RegionDone)]
    labels = {e.region.index: e.labels for e in done}
    probs = {e.region.index: e.probabilities for e in done}
    return labels, probs, seen[0]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("nan_corner", [False, True])
def test_any_budget_gives_the_same_results_and_kept_steps_are_encoded_once(
    monkeypatch, nan_corner: bool
) -> None:
    model, image = _bidirectional(), _image(nan_corner)
    regions = 5 * 6
    labels0, probs0, seen0 = _run(model, image, feature_cache_mib=0)
    assert seen0 == 2 * regions  # no cache: both passes encode every region
    labels, probs, seen = _run(model, image)  # the default budget holds this image
    assert seen == regions
    _assert_same(labels, labels0)
    _assert_same(probs, probs0)
    if nan_corner:  # the kept steps' masks of pixels without data still apply
        assert (labels0[0][5:40, 10:64] == 0).all() and (labels0[4][5:40, 4:64] == 0).all()

    # a budget that holds the first 2 steps (8 regions) of the 8 steps only
    monkeypatch.setattr(FeatureCache, "_steps_within", lambda self, per_region: 2)
    labels2, probs2, seen2 = _run(model, image)
    assert seen2 == 2 * regions - 8
    _assert_same(labels2, labels0)
    _assert_same(probs2, probs0)


def test_the_budget_bounds_the_steps_kept() -> None:
    cache = FeatureCache([4, 4, 4, 2], budget=10_000)
    assert cache._steps_within(per_region=1000.0) == 2  # 4 + 4 regions: 8000 bytes
    assert cache._steps_within(per_region=100.0) == 4
    assert cache._steps_within(per_region=3000.0) == 0
    features = [torch.zeros(4, 8, 16, 16), torch.zeros(4, 16, 8, 8)]
    tokens, positions = torch.zeros(1, 16, 32), torch.zeros(16, 2)
    assert feature_cache.encoded_bytes(features, tokens, positions) == 4 * (
        4 * 8 * 256 + 4 * 16 * 64 + 16 * 32 + 32
    )
    # sized from the first step offered (pass 1 starts at the last step)
    cache = FeatureCache([1, 1, 1], budget=2 * (8 * 256 + 16 * 64 + 4 * 32 + 8) * 4)
    one = ([object()], [torch.zeros(1, 8, 16, 16), torch.zeros(1, 16, 8, 8)])
    for number in (2, 1, 0):
        cache.offer(number, (*one, torch.zeros(1, 4, 32), torch.zeros(4, 2), {}))  # type: ignore[arg-type]
    assert cache.kept_steps == 2 and sorted(cache.kept) == [0, 1]
    assert cache.take(0) is not None and cache.take(0) is None and cache.take(2) is None
    assert FeatureCache([4], budget=0).kept_steps == 0


def test_a_cancel_in_pass_two_over_kept_steps_stops_the_run() -> None:
    model, image = _bidirectional(), _image()
    token = CancelToken()
    seen = 0
    events = []
    for event in run_inference(image, model, batch_size=3, cancel=token):
        events.append(event)
        if isinstance(event, RegionDone):
            seen += 1
            token.cancel()  # first decoded batch: every later step is a kept one
    assert isinstance(events[-1], Finished) and events[-1].cancelled
    assert 0 < seen < 30


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(InputError, match="feature_cache_mib"):
        next(iter(run_inference(_image(), _bidirectional(), feature_cache_mib=-1)))
