"""Overlapping regions are blended over a band at the start of each tile: no seams, and the
predictions are reproduced exactly wherever neighbouring windows agree."""

from __future__ import annotations

import numpy as np
import torch

from xt_engine import create_model, run_inference
from xt_engine.runtime.blending import SeamBlender
from xt_engine.runtime.events import RegionDone
from xt_engine.tiling import RegionGrid

SHAPE, R, M = (150, 230), 64, 16


def _window(field: np.ndarray, region) -> np.ndarray:
    """The (K, R, R) crop of a padded (K, H + 2R, W + 2R) field at a region's read window."""
    y, x = region.read_y0 + R, region.read_x0 + R
    return field[:, y : y + R, x : x + R]


def _mosaic(grid: RegionGrid, tiles: dict) -> np.ndarray:
    out = np.full((2, *SHAPE), np.nan, np.float32)
    for region in grid:
        out[:, region.y0 : region.y1, region.x0 : region.x1] = tiles[region.index]
    return out


def test_agreeing_windows_are_reproduced_exactly() -> None:
    """The weights form a partition of unity: when every window predicts the same field,
    blending returns that field (to float16 rounding of the kept margins)."""
    grid = RegionGrid.for_image(SHAPE, R, None, M)
    p = np.random.default_rng(0).random((SHAPE[0] + 2 * R, SHAPE[1] + 2 * R), dtype=np.float32)
    field = np.stack([p, 1 - p])
    blender = SeamBlender(grid)
    tiles = {g.index: blender.blend(g, _window(field, g)) for g in grid}
    expected = field[:, R : R + SHAPE[0], R : R + SHAPE[1]]
    np.testing.assert_allclose(_mosaic(grid, tiles), expected, atol=2e-3)
    assert len(blender._bottom) <= grid.cols + 1 and len(blender._right) <= 1  # one row held


def test_disagreeing_windows_leave_no_seam() -> None:
    """Each window predicts its own constant: cropped tiles jump by the full difference at
    every border; blended, no step between neighbouring pixels exceeds 1 / band of it."""
    grid = RegionGrid.for_image(SHAPE, R, None, M)
    values = np.random.default_rng(1).random(len(grid), dtype=np.float32)
    blender = SeamBlender(grid)
    blended, cropped = {}, {}
    for g in grid:
        window = np.stack([np.full((R, R), values[g.index]), np.full((R, R), 1 - values[g.index])])
        blended[g.index] = blender.blend(g, window)
        cropped[g.index] = window[:, M : M + g.height, M : M + g.width]
    diff = np.ptp(values)

    def max_step(mosaic: np.ndarray) -> float:
        return max(np.abs(np.diff(mosaic[0], axis=a)).max() for a in (0, 1))

    assert max_step(_mosaic(grid, cropped)) > 0.5 * diff  # seams
    assert max_step(_mosaic(grid, blended)) <= diff / M + 1e-3
    # inside each tile, past the band, a region keeps its own prediction
    for g in grid:
        np.testing.assert_allclose(blended[g.index][0, M:, M:], values[g.index], atol=1e-6)


def test_run_inference_blends_the_bands_and_keeps_the_interiors() -> None:
    image = np.random.default_rng(2).integers(0, 255, (*SHAPE, 3), dtype=np.uint8)
    model = create_model("test_convnext_none").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.head.classify.bias.copy_(torch.tensor([0.0, 0.05, -0.05]))  # no flat ties
    runs = {}
    for blend in (True, False):
        events = run_inference(
            image, model, batch_size=3, overlap=M, blend=blend, probabilities=True
        )
        runs[blend] = [e for e in events if isinstance(e, RegionDone)]
    changed = 0
    for on, off in zip(runs[True], runs[False], strict=True):
        assert on.region == off.region
        assert on.labels.shape == off.labels.shape == (on.region.height, on.region.width)
        np.testing.assert_array_equal(on.labels[M:, M:], off.labels[M:, M:])
        np.testing.assert_allclose(on.probabilities.astype(np.float32).sum(0), 1.0, atol=3e-3)
        top2 = np.sort(on.probabilities.astype(np.float32), axis=0)[-2:]
        clear = top2[1] - top2[0] > 2e-3  # float16 ties aside, labels are the best class
        np.testing.assert_array_equal(on.labels[clear], on.probabilities.argmax(0)[clear])
        changed += int((on.labels != off.labels).sum())
        if on.region.row == 0 and on.region.col == 0:  # no earlier neighbour: nothing to blend
            np.testing.assert_array_equal(on.labels, off.labels)
    assert changed > 0  # the bands did blend
