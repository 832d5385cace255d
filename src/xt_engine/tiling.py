"""Nested tokenization as pure geometry (no torch, no I/O).

An image (at some pyramid level, optionally restricted to a region of interest) is cut into
square regions of ``R`` px in raster order. Regions at the right and bottom edges may stick out
of the image; the part outside is padding that the engine fills on read and drops again when it
stitches outputs. Any image size works, including strips one pixel high.

Coordinates are ``(y, x)`` in pixels of the chosen level; boxes are half-open ``[y0, y1) x [x0, x1)``.

With ``overlap = m`` the regions still have ``R`` px (the model's input) but step by
``R - 2m``: each region's output is its centre ``(R - 2m)^2`` tile, and the model reads ``m`` px
of real neighbouring pixels on every side (overlap-tile), so no output pixel lies within ``m``
px of a region border and the border effects of the region encoder do not show as seams.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from xt_engine.errors import InputError


@dataclass(frozen=True)
class Region:
    """One region of the grid.

    ``row``/``col`` index the region in the grid; ``y0, x0`` is the top-left corner of its
    output tile in level pixels (inside the ROI's frame of the whole level); ``height``/``width``
    is the tile's valid (unpadded) part. The model reads ``size`` px square from
    ``(y0 - margin, x0 - margin)``: the tile plus ``margin`` px of overlap on every side.
    """

    index: int
    row: int
    col: int
    y0: int
    x0: int
    height: int
    width: int
    size: int
    margin: int = 0

    @property
    def read_y0(self) -> int:
        return self.y0 - self.margin

    @property
    def read_x0(self) -> int:
        return self.x0 - self.margin

    @property
    def y1(self) -> int:
        return self.y0 + self.height

    @property
    def x1(self) -> int:
        return self.x0 + self.width

    @property
    def pad_bottom(self) -> int:
        return self.size - self.height

    @property
    def pad_right(self) -> int:
        return self.size - self.width


@dataclass(frozen=True)
class RegionGrid:
    """Regions of ``region_size`` px covering ``box = (y0, x0, y1, x1)`` of a level.

    Example::

        grid = RegionGrid.for_image((1000, 700), region_size=256)
        grid.rows, grid.cols  # (4, 3)
    """

    box: tuple[int, int, int, int]
    region_size: int
    overlap: int = 0

    @classmethod
    def for_image(
        cls,
        shape_yx: tuple[int, int],
        region_size: int,
        roi: tuple[int, int, int, int] | None = None,
        overlap: int = 0,
    ) -> RegionGrid:
        """Grid over an image of ``shape_yx`` or its ``roi`` (clipped checks, clear errors)."""
        height, width = (int(s) for s in shape_yx)
        if height < 1 or width < 1:
            raise InputError(f"image of shape {shape_yx} is empty", "pass an image with pixels")
        if region_size < 1:
            raise InputError(f"region_size={region_size} < 1", "use a positive region size")
        if roi is None:
            roi = (0, 0, height, width)
        y0, x0, y1, x1 = (int(v) for v in roi)
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise InputError(
                f"ROI (y0={y0}, x0={x0}, y1={y1}, x1={x1}) is empty or outside the image "
                f"of {height} x {width} px",
                f"give 0 <= y0 < y1 <= {height} and 0 <= x0 < x1 <= {width}",
            )
        if not 0 <= 2 * overlap < region_size:
            raise InputError(
                f"overlap={overlap} px leaves no output tile in {region_size} px regions",
                f"use an overlap from 0 to {(region_size - 1) // 2} px",
            )
        return cls(box=(y0, x0, y1, x1), region_size=int(region_size), overlap=int(overlap))

    @property
    def step(self) -> int:
        """Distance between neighbouring regions, the side of each output tile: R - 2 overlap."""
        return self.region_size - 2 * self.overlap

    @property
    def height(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def width(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.step)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.step)

    def __len__(self) -> int:
        return self.rows * self.cols

    def region(self, index: int) -> Region:
        """The region at raster ``index`` (row-major)."""
        if not 0 <= index < len(self):
            raise IndexError(f"region {index} out of range for {len(self)} regions")
        row, col = divmod(index, self.cols)
        step = self.step
        y0 = self.box[0] + row * step
        x0 = self.box[1] + col * step
        return Region(
            index=index,
            row=row,
            col=col,
            y0=y0,
            x0=x0,
            height=min(step, self.box[2] - y0),
            width=min(step, self.box[3] - x0),
            size=self.region_size,
            margin=self.overlap,
        )

    def __iter__(self) -> Iterator[Region]:
        for index in range(len(self)):
            yield self.region(index)


def token_positions(region: Region, grid_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """2-D positions in the whole image's token grid for a region's ``grid_hw`` patch tokens.

    A region with a ``gh x gw`` patch grid at grid position ``(row, col)`` owns tokens whose
    global position is ``(row * gh + i, col * gw + j)``, in raster order inside the region.
    """
    gh, gw = grid_hw
    return [(region.row * gh + i, region.col * gw + j) for i in range(gh) for j in range(gw)]


def box_at_level(
    box_level0: tuple[int, int, int, int],
    downsample_yx: tuple[float, float],
    shape_yx: tuple[int, int],
) -> tuple[int, int, int, int]:
    """A level-0 box ``(y0, x0, y1, x1)`` in the pixels of a level ``downsample_yx`` times
    smaller (of shape ``shape_yx``), rounded outwards so it still covers the box, clipped."""
    y0, x0, y1, x1 = box_level0
    dy, dx = downsample_yx
    return (
        max(0, math.floor(y0 / dy)),
        max(0, math.floor(x0 / dx)),
        min(shape_yx[0], max(math.ceil(y1 / dy), math.floor(y0 / dy) + 1)),
        min(shape_yx[1], max(math.ceil(x1 / dx), math.floor(x0 / dx) + 1)),
    )
