from __future__ import annotations

import numpy as np
import pytest

from xt_engine import InputError, RegionGrid
from xt_engine.tiling import token_positions


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((1, 1), 64),
        ((1, 1000), 64),
        ((1000, 1), 64),
        ((150, 200), 64),
        ((256, 256), 64),
        ((257, 511), 128),
        ((999, 1001), 256),
    ],
)
def test_regions_cover_the_image_exactly_once(shape: tuple[int, int], size: int) -> None:
    grid = RegionGrid.for_image(shape, size)
    hits = np.zeros(shape, dtype=np.int32)
    for region in grid:
        assert 0 < region.height <= size and 0 < region.width <= size
        assert region.pad_bottom == size - region.height and region.pad_right == size - region.width
        hits[region.y0 : region.y1, region.x0 : region.x1] += 1
    assert (hits == 1).all()
    assert len(grid) == -(-shape[0] // size) * -(-shape[1] // size)
    # raster order
    assert [(r.row, r.col) for r in grid] == sorted((r.row, r.col) for r in grid)


def test_roi_restricts_the_grid() -> None:
    grid = RegionGrid.for_image((1000, 1000), 128, roi=(100, 200, 400, 300))
    assert (grid.rows, grid.cols) == (3, 1)
    first, last = grid.region(0), grid.region(len(grid) - 1)
    assert (first.y0, first.x0) == (100, 200)
    assert (last.y1, last.x1) == (400, 300)


@pytest.mark.parametrize("roi", [(0, 0, 0, 10), (-1, 0, 5, 5), (0, 0, 20, 11), (5, 5, 4, 9)])
def test_bad_roi_names_the_valid_range(roi: tuple[int, int, int, int]) -> None:
    with pytest.raises(InputError, match=r"0 <= y0 < y1 <= 20"):
        RegionGrid.for_image((20, 10), 8, roi=roi)


def test_token_positions_are_global() -> None:
    grid = RegionGrid.for_image((256, 256), 128)
    region = grid.region(3)  # row 1, col 1
    positions = token_positions(region, (4, 4))
    assert positions[0] == (4, 4) and positions[-1] == (7, 7) and len(positions) == 16


@pytest.mark.parametrize("factor", [1, 2, 4, 3.9])
def test_level0_roi_maps_to_a_covering_box_at_each_level(factor: float) -> None:
    from xt_engine.tiling import box_at_level

    rng = np.random.default_rng(int(factor * 10))
    shape0 = (1000, 777)
    shape = (int(np.ceil(shape0[0] / factor)), int(np.ceil(shape0[1] / factor)))
    for _ in range(50):
        y0, y1 = sorted(rng.integers(0, shape0[0], 2))
        x0, x1 = sorted(rng.integers(0, shape0[1], 2))
        y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
        b = box_at_level((y0, x0, y1, x1), (factor, factor), shape)
        assert 0 <= b[0] < b[2] <= shape[0] and 0 <= b[1] < b[3] <= shape[1]
        # the level box, mapped back, covers the level-0 box (up to clipping at the edge)
        assert b[0] * factor <= y0 and b[1] * factor <= x0
        assert b[2] * factor >= min(y1, shape[0] * factor) - 1e-9
        assert b[3] * factor >= min(x1, shape[1] * factor) - 1e-9
        grid = RegionGrid.for_image(shape, 64, roi=b)
        assert sum(r.height * r.width for r in grid) == (b[2] - b[0]) * (b[3] - b[1])


@pytest.mark.parametrize(
    ("shape", "size", "overlap"), [((150, 200), 64, 16), ((1, 300), 64, 8), ((257, 511), 128, 32)]
)
def test_overlapping_regions_output_tiles_that_cover_the_image_once(
    shape: tuple[int, int], size: int, overlap: int
) -> None:
    grid = RegionGrid.for_image(shape, size, overlap=overlap)
    step = size - 2 * overlap
    assert grid.step == step
    assert len(grid) == -(-shape[0] // step) * -(-shape[1] // step)
    hits = np.zeros(shape, dtype=np.int32)
    for region in grid:
        assert region.size == size and region.margin == overlap
        assert (region.read_y0, region.read_x0) == (
            region.row * step - overlap,
            region.col * step - overlap,
        )
        assert 0 < region.height <= step and 0 < region.width <= step
        hits[region.y0 : region.y1, region.x0 : region.x1] += 1
    assert (hits == 1).all()


def test_overlap_must_leave_an_output_tile() -> None:
    with pytest.raises(InputError, match="overlap from 0 to 31 px"):
        RegionGrid.for_image((100, 100), 64, overlap=32)
