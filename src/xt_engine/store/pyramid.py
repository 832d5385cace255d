"""The coarser levels of the result store's label pyramid, built as regions complete.

Level ``k >= 1`` is level ``k - 1`` subsampled by 2 (nearest: pixel ``(i, j)`` of level ``k`` is
pixel ``(i 2^k, j 2^k)`` of level 0), chunked like level 0. A level-``k`` chunk is built once
every region whose output tile meets it is done, from the ``(2 Ty) x (2 Tx)`` block of level
``k - 1`` beneath it: four chunk files read and one written (:mod:`xt_engine.store.chunk_files`), or
through zarr one read and one write per run of neighbouring chunks. Writing
each region's subsampled tile to every level instead cost one small zarr call per region and
level, and zarr's per-call cost made the store ~12% of a CPU run.

Regions finish in raster order, so a chunk waits for about ``T 2^k / step`` region rows; between
batches nothing is held but one done flag per region (a byte per region). A cancelled run
builds the partly covered chunks too (:meth:`LabelPyramid.flush`), and a resumed run first
builds every chunk its finished regions completed (:meth:`LabelPyramid.catch_up`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import zarr

from xt_engine.store.chunk_files import ChunkFiles
from xt_engine.tiling import Region, RegionGrid

__all__ = ["LabelPyramid"]


class LabelPyramid:
    """Keeps ``levels[1:]`` in step with ``levels[0]`` for the regions of ``grid``.

    ``levels``: the label arrays, finest first, each (H_k, W_k) with ``H_k = ceil(H_{k-1} / 2)``;
    ``done``: (len(grid),) bool, the regions already written to level 0 (copied).
    """

    def __init__(self, levels: list[zarr.Array], grid: RegionGrid, done: np.ndarray) -> None:
        self.levels = levels
        self.grid = grid
        self.done = np.asarray(done, dtype=bool).reshape(grid.rows, grid.cols).copy()
        self._files = [ChunkFiles.of(level) for level in levels]  # None: zarr slicing

    # -- geometry --------------------------------------------------------------------------

    def _chunk(self, k: int) -> tuple[int, int]:
        ty, tx = self.levels[k].chunks
        return int(ty), int(tx)

    def _region_span(self, lo: int, hi: int, origin: int, end: int, count: int) -> range:
        """Indices of the regions along one axis whose tiles meet level-0 pixels [lo, hi)."""
        lo, hi = max(lo, origin), min(hi, end)
        if lo >= hi:
            return range(0)
        step = self.grid.step
        return range((lo - origin) // step, min(count, -(-(hi - origin) // step)))

    def _regions_under(self, k: int, cy: int, cx: int) -> tuple[range, range]:
        """Region rows and columns whose output tiles meet chunk ``(cy, cx)`` of level ``k``."""
        ty, tx = self._chunk(k)
        f = 2**k
        y0, x0, y1, x1 = self.grid.box
        rows = self._region_span(cy * ty * f, (cy + 1) * ty * f, y0, y1, self.grid.rows)
        cols = self._region_span(cx * tx * f, (cx + 1) * tx * f, x0, x1, self.grid.cols)
        return rows, cols

    def _chunks_over(self, k: int, region: Region) -> Iterator[tuple[int, int]]:
        """Chunks of level ``k`` that region's output tile meets."""
        ty, tx = self._chunk(k)
        f = 2**k
        for cy in range(region.y0 // (ty * f), (region.y1 - 1) // (ty * f) + 1):
            for cx in range(region.x0 // (tx * f), (region.x1 - 1) // (tx * f) + 1):
                yield cy, cx

    def _state(self, k: int, cy: int, cx: int) -> tuple[bool, bool]:
        """(some region under the chunk is done, all of them are)."""
        rows, cols = self._regions_under(k, cy, cx)
        if not rows or not cols:
            return False, False
        under = self.done[rows.start : rows.stop, cols.start : cols.stop]
        return bool(under.any()), bool(under.all())

    # -- building --------------------------------------------------------------------------

    def _build(self, k: int, chunks: Iterable[tuple[int, int]]) -> None:
        """Subsample level ``k - 1`` into the given chunks of level ``k``: with chunk files, four
        fine chunks read and one coarse chunk written per chunk; through zarr, one read and one
        write per horizontal run of neighbouring chunks (zarr's per-call cost dominates)."""
        ty, tx = self._chunk(k)
        fine, coarse = self.levels[k - 1], self.levels[k]
        fine_files, coarse_files = self._files[k - 1], self._files[k]
        if fine_files is not None and coarse_files is not None and self._chunk(k - 1) == (ty, tx):
            for cy, cx in sorted(set(chunks)):  # a 2 x 2 block of whole fine chunks each
                rows = [[fine_files.read((2 * cy + i, 2 * cx + j)) for j in (0, 1)] for i in (0, 1)]
                coarse_files.write((cy, cx), np.block(rows)[::2, ::2])
            return
        for cy, cx0, cx1 in _runs(sorted(set(chunks))):
            block = np.asarray(fine[2 * cy * ty : 2 * (cy + 1) * ty, 2 * cx0 * tx : 2 * cx1 * tx])
            sub = block[::2, ::2]
            coarse[cy * ty : cy * ty + sub.shape[0], cx0 * tx : cx0 * tx + sub.shape[1]] = sub

    def update(self, regions: Iterable[Region]) -> None:
        """Record ``regions`` (already on level 0) as done and build the chunks they complete."""
        touched = list(regions)
        for region in touched:
            self.done[region.row, region.col] = True
        for k in range(1, len(self.levels)):
            candidates = {c for region in touched for c in self._chunks_over(k, region)}
            self._build(k, [c for c in candidates if self._state(k, *c)[1]])

    def _all_chunks(self, k: int) -> Iterator[tuple[int, int]]:
        """Every chunk of level ``k`` over the grid's box."""
        ty, tx = self._chunk(k)
        f = 2**k
        y0, x0, y1, x1 = self.grid.box
        for cy in range(y0 // (ty * f), (y1 - 1) // (ty * f) + 1):
            for cx in range(x0 // (tx * f), (x1 - 1) // (tx * f) + 1):
                yield cy, cx

    def catch_up(self) -> None:
        """Build every chunk whose regions are all done (after a resume: a run interrupted
        between writing a region and building the chunks it completed)."""
        for k in range(1, len(self.levels)):
            self._build(k, [c for c in self._all_chunks(k) if self._state(k, *c)[1]])

    def flush(self) -> None:
        """Build the chunks only partly done (a cancelled run: its coarse levels then show
        every finished region; the rest stays fill value until a resume completes them)."""
        for k in range(1, len(self.levels)):
            states = ((c, self._state(k, *c)) for c in self._all_chunks(k))
            self._build(k, [c for c, (some, every) in states if some and not every])


def _runs(chunks: list[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
    """Sorted ``(cy, cx)`` -> ``(cy, cx_start, cx_stop)`` runs of neighbouring chunks."""
    start = 0
    for i in range(1, len(chunks) + 1):
        if (
            i == len(chunks)
            or chunks[i][0] != chunks[i - 1][0]
            or chunks[i][1] != chunks[i - 1][1] + 1
        ):
            yield chunks[start][0], chunks[start][1], chunks[i - 1][1] + 1
            start = i
