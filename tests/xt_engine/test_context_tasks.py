"""The context task family: each task's rule holds, one region alone cannot tell, the scorer."""

from __future__ import annotations

import numpy as np
import pytest

from xt_engine.synthetic import (
    CONTEXT_TASKS,
    context_accuracy,
    make_context_scene,
    score_context_task,
)

SIZE, REGION = 512, 64


def scenes(task: str, n: int = 12):
    return [make_context_scene(task, SIZE, REGION, seed=s) for s in range(n)]


@pytest.mark.parametrize("task", CONTEXT_TASKS)
def test_scene_layout(task):
    for scene in scenes(task):
        assert scene.image.shape == scene.mask.shape == (SIZE, SIZE)
        assert scene.image.dtype == scene.mask.dtype == np.uint8
        assert set(np.unique(scene.mask)) <= {0, 1, 2, 3}
        rows, cols = scene.objects[:, 0] // REGION, scene.objects[:, 1] // REGION
        assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == len(scene.objects)
        for y0, x0, y1, x1, cls in scene.objects:
            assert (scene.mask[y0:y1, x0:x1] == cls).all()
            assert (y0 // REGION, x0 // REGION) == ((y1 - 1) // REGION, (x1 - 1) // REGION)
        # hard: the object's region holds nothing but the object (no cue pixel at all)
        for (y0, x0, _, _, cls), hard in zip(scene.objects, scene.hard, strict=True):
            r, c = y0 // REGION * REGION, x0 // REGION * REGION
            region = scene.mask[r : r + REGION, c : c + REGION]
            assert hard == (not (region == 3).any())
            if hard:
                assert set(np.unique(region)) == {0, int(cls)}
                # the object's pixels and the speckle look the same for A and B
                assert (scene.image[scene.mask == cls] > 150).mean() > 0.9


@pytest.mark.parametrize("task", CONTEXT_TASKS)
def test_both_classes_and_mostly_hard(task):
    all_scenes = scenes(task, 16)
    classes = np.concatenate([s.objects[:, 4] for s in all_scenes])
    a, b = (classes == 1).sum(), (classes == 2).sum()
    assert min(a, b) >= 0.25 * (a + b)
    assert np.mean(np.concatenate([s.hard for s in all_scenes])) > 0.85


def test_near_cue_rule():
    for scene in scenes("near_cue"):
        ys, xs = np.nonzero(scene.mask == 3)
        for y0, x0, y1, x1, cls in scene.objects:
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            nearest_cue_pixel = np.hypot(ys - cy, xs - cx).min()
            if cls == 1:  # within k = 2 regions of a cue's centre: its pixels closer still
                assert nearest_cue_pixel <= 2 * REGION
            else:  # beyond 2.5 regions of every cue centre (a cue is 24 px wide)
                assert nearest_cue_pixel >= 2.5 * REGION - 24


def test_global_cue_rule():
    kinds = set()
    for scene in scenes("global_cue"):
        cue = scene.mask == 3
        ys, xs = np.nonzero(cue)
        box = cue[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        ring = not box[box.shape[0] // 2, box.shape[1] // 2]  # a cross is filled at its centre
        assert set(scene.objects[:, 4].tolist()) == {1 if ring else 2}
        kinds.add(ring)
    assert kinds == {True, False}


def test_offset_rule():
    for scene in scenes("offset"):
        for y0, x0, y1, x1, cls in scene.objects:
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            above = scene.mask[cy - 2 * REGION - 3 : cy - 2 * REGION + 4, cx - 3 : cx + 4]
            assert (above == 3).any() == (cls == 1)


def test_count_rule():
    for scene in scenes("count", 16):
        n = len(scene.objects)
        assert n > 16 if scene.objects[0, 4] == 1 else n < 16


def test_scorer():
    scene = make_context_scene("global_cue", SIZE, REGION, seed=0)
    perfect = score_context_task(scene.mask, scene)
    assert context_accuracy(perfect) == 1.0 and perfect["missed"] == 0
    swapped = scene.mask.copy()
    swapped[scene.mask == 1], swapped[scene.mask == 2] = 2, 1
    assert context_accuracy(score_context_task(swapped, scene)) == 0.0
    nothing = score_context_task(np.zeros_like(scene.mask), scene)
    assert nothing["missed"] == nothing["hard_a"] + nothing["hard_b"] == scene.hard.sum()
    # a constant answer is chance whatever the classes' frequencies (count: A scenes hold more)
    total: dict[str, float] = {}
    for s in scenes("count", 8):
        constant = np.where(s.mask >= 1, 1, 0).astype(np.uint8)
        for key, value in score_context_task(constant, s).items():
            total[key] = total.get(key, 0.0) + value
    assert total["hard_a"] != total["hard_b"]
    assert context_accuracy(total) == 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown context task"):
        make_context_scene("nope")
    with pytest.raises(ValueError, match="multiple of the region"):
        make_context_scene("count", 500, 64)
