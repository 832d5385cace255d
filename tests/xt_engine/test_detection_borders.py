"""Detections on region borders are reported once; the detection limit and threshold are config
and CLI options; a resumed run reports what an uninterrupted one does."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
import zarr
from scipy import ndimage

from xt_engine import CancelToken, Progress, RegionDone, create_model, open_image, run_inference
from xt_engine.cli import main
from xt_engine.models import XTModel, model_config
from xt_engine.store.result_store import DETECTIONS_FILE, OutputStore
from xt_engine.tasks.detection import BorderSuppression, box_iou, decode_detections
from xt_engine.tiling import RegionGrid

R = 64  # the tiny test models' region size
SIZE = 24  # px, the side of every object (and of every predicted box)


def _row(y: float, x: float, cls: int = 1, score: float = 0.9, h: float = 16, w: float = 16):
    return np.array([[y, x, cls, score, h, w]], np.float32)


EMPTY = np.zeros((0, 6), np.float32)


# -- BorderSuppression on its own -------------------------------------------------------------
def test_same_class_boxes_from_left_and_right_neighbours_are_reported_once() -> None:
    grid = RegionGrid.for_image((128, 192), R)
    suppress = BorderSuppression(grid, 0.3)
    assert len(suppress.filter(grid.region(0), _row(30, 62))) == 1
    assert len(suppress.filter(grid.region(1), _row(30, 66, score=0.99))) == 0  # earlier wins
    assert len(suppress.filter(grid.region(1), _row(30, 100))) == 1  # inside region 1 only


def test_peaks_in_neighbouring_cells_across_a_border_are_one_object() -> None:
    """A trained head's pair on a border: cells 15 | 0, centres one stride apart, the second
    box small (IoU ~0.02): one object by the 3 x 3 peak rule, unless the stride is not given."""
    grid = RegionGrid.for_image((128, 192), R)
    first, second = _row(106, 62, h=8.3, w=5.8), _row(106, 66, h=3.4, w=2.9)
    assert box_iou(first[:, [0, 1, 4, 5]], second[:, [0, 1, 4, 5]])[0, 0] < 0.05
    for stride, reported in ((4, 0), (0, 1)):
        suppress = BorderSuppression(grid, 0.3, stride=stride)
        suppress.filter(grid.region(0), first)
        assert len(suppress.filter(grid.region(1), second)) == reported
    suppress = BorderSuppression(grid, 0.3, stride=4)
    suppress.filter(grid.region(0), first)
    assert len(suppress.filter(grid.region(1), _row(106, 70, h=3.4, w=2.9))) == 1  # 2 cells


def test_different_classes_on_a_border_are_both_reported() -> None:
    grid = RegionGrid.for_image((128, 192), R)
    suppress = BorderSuppression(grid, 0.3, stride=4)
    suppress.filter(grid.region(0), _row(30, 62, cls=1))
    assert len(suppress.filter(grid.region(1), _row(30, 66, cls=2))) == 1


@pytest.mark.parametrize(
    ("first", "second", "second_row", "dropped"),
    [
        (0, 3, (66, 30), True),  # above
        (1, 3, (66, 62), True),  # above-right
        (0, 4, (66, 66), True),  # above-left
        (0, 2, (30, 130), False),  # two to the right: not a neighbour
        (2, 3, (66, 62), False),  # the next row's first region: not a neighbour of region 2
    ],
)
def test_only_earlier_neighbours_suppress(
    first: int, second: int, second_row: tuple[float, float], dropped: bool
) -> None:
    grid = RegionGrid.for_image((128, 192), R)  # 2 rows x 3 cols
    suppress = BorderSuppression(grid, 0.3)
    big = 1000.0  # boxes this big overlap with IoU > 0.8 wherever their regions lie
    a, b = grid.region(first), grid.region(second)
    assert len(suppress.filter(a, _row(a.y1 - 2, a.x1 - 2, h=big, w=big))) == 1
    out = suppress.filter(b, _row(*second_row, h=big, w=big))
    assert len(out) == (0 if dropped else 1)


def test_rows_far_from_the_bottom_and_right_edges_are_not_held() -> None:
    grid = RegionGrid.for_image((64 * 50, 128), R)  # 50 rows x 2 cols
    suppress = BorderSuppression(grid, 0.3)
    for region in (grid.region(i) for i in range(len(grid))):
        rows = np.concatenate(
            [
                _row(region.y0 + 10, region.x0 + 10, h=8, w=8),  # far from both edges: dropped
                _row(region.y1 - 3, region.x0 + 20, h=8, w=8),  # on the bottom edge: held
            ]
        )
        suppress.filter(region, rows)
        assert suppress.held_rows <= 4  # two rows of regions, one row each, never more
    assert suppress.held_rows == 2  # row 48's; row 49 (the last) has no region below


def test_band_bound_holds_every_row_that_can_still_match() -> None:
    """Random pairs across a bottom border: whenever IoU > t, the earlier row was held."""
    rng = np.random.default_rng(0)
    grid = RegionGrid.for_image((128, 64), R)  # region 0 above region 1
    for t in (0.1, 0.3, 0.5, 0.9):
        for _ in range(300):
            h0, h1 = rng.uniform(2, 120, 2)
            a = _row(rng.uniform(0, 64), 30, h=h0, w=20)
            b = _row(rng.uniform(64, 128), 30, h=h1, w=20)
            if box_iou(a[:, [0, 1, 4, 5]], b[:, [0, 1, 4, 5]])[0, 0] <= t:
                continue
            suppress = BorderSuppression(grid, t)
            suppress.filter(grid.region(0), a)
            assert suppress.held_rows == 1, (t, a, b)
            assert len(suppress.filter(grid.region(1), b)) == 0


def _random_rows(grid: RegionGrid, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Per region, (M, 6) rows of random objects: every region whose tile lies within 6 px of
    an object's centre reports it, centre clamped into its tile (duplicates across borders)."""
    out: dict[int, list[list[float]]] = {i: [] for i in range(len(grid))}
    for _ in range(60):
        y, x = rng.uniform(0, grid.height), rng.uniform(0, grid.width)
        cls, h, w = int(rng.integers(1, 3)), *rng.uniform(4, 40, 2)
        for i in range(len(grid)):
            r = grid.region(i)
            cy, cx = min(max(y, r.y0), r.y1 - 0.5), min(max(x, r.x0), r.x1 - 0.5)
            if abs(cy - y) < 6 and abs(cx - x) < 6:
                out[i].append([cy, cx, cls, rng.uniform(0.3, 1), h, w])
    return {i: np.asarray(v, np.float32).reshape(-1, 6) for i, v in out.items()}


def test_seeding_from_a_store_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    base = np.zeros((300, 340, 3), np.uint8)
    source = open_image([base, base[::2, ::2].copy()])  # level 1: 2x downsample
    grid = RegionGrid.for_image(source.shape_yx(1), R)  # 3 x 3 regions
    rows = _random_rows(grid, rng)
    whole = BorderSuppression(grid, 0.3, source.downsample(1), stride=4)
    reported = {i: whole.filter(grid.region(i), rows[i]) for i in range(len(grid))}
    assert sum(map(len, reported.values())) < sum(map(len, rows.values()))  # some dropped
    for cut in range(1, len(grid)):
        store = OutputStore.create(
            tmp_path / f"cut{cut}.zarr",
            source=source,
            level=1,
            grid=grid,
            config=model_config("test_convnext_txl_det"),
        )
        for i in range(cut):  # what the interrupted run wrote
            store.write_region(grid.region(i), None, None, reported[i])
        resumed = BorderSuppression(grid, 0.3, source.downsample(1), stride=4)
        resumed.seed_from_csv(store.path / DETECTIONS_FILE, store.done_regions())
        for i in range(cut, len(grid)):
            np.testing.assert_array_equal(resumed.filter(grid.region(i), rows[i]), reported[i])


def test_decode_takes_the_limit_and_threshold_from_the_head_config() -> None:
    heat = torch.full((3, 16, 16), -10.0)
    for k, logit in enumerate((3.0, 2.0, 1.0, 0.0, -1.0)):  # scores .95 .88 .73 .5 .27
        heat[2, 2 * k, 3] = logit
    size = torch.zeros(2, 16, 16)
    head = model_config("test_convnext_txl_det").head
    assert len(decode_detections(heat, size, 4, head=head)) == 4
    two = decode_detections(heat, size, 4, head=replace(head, max_detections=2))
    assert two[:, 3].tolist() == pytest.approx([0.9526, 0.8808], abs=1e-4)
    assert len(decode_detections(heat, size, 4, head=replace(head, detection_threshold=0.8))) == 2


# -- end to end: an oracle detection model ----------------------------------------------------
def _oracle(model: XTModel) -> XTModel:
    """Make ``model`` detect the objects drawn by :func:`_scene` as a trained CenterNet would:
    each region puts one peak per visible object at the cell nearest the object's true centre
    (clamped into the region: the tail of the Gaussian across a border), score = brightness,
    box SIZE x SIZE. It reads the pixels only (channel 0 brightness, channels 1-2 the offset of
    each object pixel to its object's centre), so any schedule of regions gives the same result.
    """
    stride, k = model.output_stride, model.config.head.num_classes
    encoder_forward = model.region_encoder.forward

    def encoder(x: torch.Tensor) -> list[torch.Tensor]:
        features = encoder_forward(x)
        raw = x * model.pixel_std + model.pixel_mean  # (N, 3, R, R) in [0, 1]
        first = features[0].clone()
        first[:, :3] = F.avg_pool2d(raw.float(), stride).to(first.dtype)
        return [first, *features[1:]]

    def head(context: torch.Tensor, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        cells = features[0][:, :3].float().cpu().numpy()  # (N, 3, g, g)
        n, _, g, _ = cells.shape
        heat = torch.full((n, k, g, g), -10.0)
        log_size = torch.full((n, 2, g, g), math.log(SIZE))
        for i in range(n):
            labelled, count = ndimage.label(cells[i, 0] > 0.2)
            for obj in range(1, count + 1):
                iy, ix = np.nonzero(labelled == obj)
                score = float(cells[i, 0, iy, ix].mean())
                cy = round(np.mean(iy * stride + 1.5 + cells[i, 1, iy, ix] * 255 - 128))
                cx = round(np.mean(ix * stride + 1.5 + cells[i, 2, iy, ix] * 255 - 128))
                cell_y = min(max(int(cy // stride), 0), g - 1)
                cell_x = min(max(int(cx // stride), 0), g - 1)
                heat[i, 2, cell_y, cell_x] = math.log(score / (1 - score))
        return {"heatmap": heat.to(context.device), "log_size": log_size.to(context.device)}

    model.region_encoder.forward = encoder  # type: ignore[method-assign]
    model.head.forward = head  # type: ignore[method-assign]
    return model


def _scene(shape: tuple[int, int], objects: list[tuple[int, int, float]]) -> np.ndarray:
    """(H, W, 3) uint8 with SIZE x SIZE objects centred at ``(y, x)`` (multiples of 4), given
    brightness: channel 0 the brightness, channels 1-2 each pixel's offset to the centre + 128."""
    image = np.zeros((*shape, 3), np.uint8)
    for y, x, brightness in objects:
        ys, xs = np.mgrid[y - SIZE // 2 : y + SIZE // 2, x - SIZE // 2 : x + SIZE // 2]
        image[ys, xs, 0] = round(brightness * 255)
        image[ys, xs, 1] = y - ys + 128
        image[ys, xs, 2] = x - xs + 128
    return image


# 3 x 3 regions of 64 px: on vertical borders (0|1, 3|4), horizontal ones (0-3, 4-7), the
# corner of 4, 5, 7 and 8, and inside region 8
OBJECTS = [
    (32, 64, 0.9),
    (64, 32, 0.7),
    (96, 64, 0.65),
    (128, 96, 0.8),
    (128, 128, 0.85),
    (160, 168, 0.75),
]


def _detections(image: np.ndarray, model: XTModel, **kw: object) -> np.ndarray:
    events = run_inference(image, model, batch_size=2, **kw)
    rows = [e.detections for e in events if isinstance(e, RegionDone)]
    return np.concatenate([r for r in rows if r is not None])


def _model(**head: object) -> XTModel:
    model = create_model("test_convnext_txl_det").eval()
    for key, value in head.items():
        setattr(model.config.head, key, value)
    return _oracle(model)


def test_an_object_straddling_region_borders_is_reported_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = _scene((192, 192), OBJECTS)
    after = _detections(image, _model())
    with monkeypatch.context() as patch:  # no suppressor: what each region reports
        patch.setattr(BorderSuppression, "for_head", classmethod(lambda cls, *a: None))
        before = _detections(image, _model())
    print(f"detections of {len(OBJECTS)} objects: {len(before)} without, {len(after)} with")
    assert len(before) == 13  # 2 + 2 + 2 + 2 + 4 (the corner) + 1
    assert len(after) == len(OBJECTS)
    for y, x, _ in OBJECTS:  # each found once, within 2 px of its centre (the cell centre)
        assert (np.abs(after[:, :2] - (y, x)).max(axis=1) <= 2).sum() == 1
    assert len(_detections(image, _model(), overlap=16)) == len(OBJECTS)  # 32 px tiles


def test_max_detections_and_threshold_from_the_config_change_the_output() -> None:
    inside = [(16, 16, 0.9), (48, 48, 0.8), (16, 48, 0.6), (48, 16, 0.4)]  # region 0 only
    image = _scene((64, 64), inside)
    assert len(_detections(image, _model())) == 4
    assert _detections(image, _model(max_detections=2))[:, 3].tolist() == pytest.approx(
        [0.9, 0.8], abs=0.01
    )
    assert len(_detections(image, _model(detection_threshold=0.5))) == 3


def _csv_rows(path: Path) -> list[list[str]]:
    with (path / DETECTIONS_FILE).open(newline="") as handle:
        return sorted(list(csv.reader(handle))[1:])


def test_a_resumed_run_reports_what_an_uninterrupted_one_does(tmp_path: Path) -> None:
    image = _scene((192, 192), OBJECTS)
    model = _model()
    list(run_inference(image, model, output=tmp_path / "whole.zarr", batch_size=2))
    whole = _csv_rows(tmp_path / "whole.zarr")
    assert len(whole) == len(OBJECTS)
    out = tmp_path / "resumed.zarr"
    cancel = CancelToken()
    for event in run_inference(image, model, output=out, batch_size=2, cancel=cancel):
        if isinstance(event, Progress) and event.done >= 4:  # region 4 (object on 3|4) to come
            cancel.cancel()
    assert zarr.open_group(str(out), mode="r").attrs["xt"]["complete"] is False
    assert len(_csv_rows(out)) < len(whole)
    list(run_inference(image, model, output=out, batch_size=2, resume=True))
    assert zarr.open_group(str(out), mode="r").attrs["xt"]["complete"] is True
    assert _csv_rows(out) == whole


# -- the CLI ----------------------------------------------------------------------------------
def test_cli_detection_options_override_the_model_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import xt_engine.weights.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda spec, **kw: _model())
    inside = [(16, 16, 0.9), (48, 48, 0.8), (16, 48, 0.6), (48, 16, 0.4)]
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, _scene((64, 64), inside), photometric="rgb")
    infer = ["infer", str(path), "--model", "test_convnext_txl_det"]
    assert main([*infer, "--out", str(tmp_path / "a.zarr")]) == 0
    assert len(_csv_rows(tmp_path / "a.zarr")) == 4
    out = tmp_path / "b.zarr"
    assert main([*infer, "--out", str(out), "--detection-threshold", "0.5"]) == 0
    assert len(_csv_rows(out)) == 3
    out = tmp_path / "c.zarr"
    assert main([*infer, "--out", str(out), "--max-detections", "2"]) == 0
    assert sorted(float(r[5]) for r in _csv_rows(out)) == pytest.approx([0.8, 0.9], abs=0.01)
    head = zarr.open_group(str(out), mode="r").attrs["xt"]["model_config"]["head"]
    assert head["max_detections"] == 2 and head["detection_threshold"] == 0.3
    capsys.readouterr()
    out = tmp_path / "refused.zarr"
    assert main([*infer, "--out", str(out), "--max-detections", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-detections" in err and "fix:" in err and len(err.splitlines()) == 1
    assert main([*infer, "--out", str(out), "--detection-threshold", "1.5"]) == 2
    monkeypatch.setattr(loading, "load_model", lambda spec, **kw: create_model("test_convnext_txl"))
    assert main([*infer, "--out", str(out), "--max-detections", "5"]) == 2
    assert "need a detection model" in capsys.readouterr().err
