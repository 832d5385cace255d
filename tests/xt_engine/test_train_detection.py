"""Detection training from masks: targets, matching, and a tiny model that learns to find blobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
import torch

from xt_engine import RegionDone, load_checkpoint, run_inference
from xt_engine.cli import main
from xt_engine.train.detection import detection_scores, detection_targets, match_counts


def test_targets_put_one_peak_per_component_with_its_box_size() -> None:
    masks = np.zeros((1, 64, 64), np.int64)
    masks[0, 10:16, 20:24] = 2  # 6 x 4 object of class 2, centre (13, 22)
    masks[0, 40:43, 40:43] = 1  # 3 x 3 of class 1, centre (41.5, 41.5)
    masks[0, 0:4, 60:64] = -1  # padding is no object
    heat, log_size, centres = detection_targets(masks, num_classes=3, stride=4)
    assert heat.shape == (1, 3, 16, 16) and log_size.shape == (1, 2, 16, 16)
    assert (heat[0, 0] == 0).all()  # background never holds a centre
    assert np.argwhere(heat[0, 2] == 1).tolist() == [[3, 5]]
    assert np.argwhere(heat[0, 1] == 1).tolist() == [[10, 10]]
    assert 0 < heat[0, 2, 3, 6] < 1 and heat[0, 2, 12, 12] < 1e-3  # Gaussian falls off
    np.testing.assert_allclose(np.exp(log_size[0, :, 3, 5]), [6, 4], rtol=1e-5)
    assert centres.sum() == 2


def test_matching_counts_hits_misses_and_false_alarms() -> None:
    heat = torch.zeros(2, 8, 8)
    heat[1, 2, 2] = 1
    heat[1, 6, 6] = 1
    stride = 4
    # (y, x, class, score, h, w) in px: one hit near (2, 2), one false alarm far away
    peaks = torch.tensor(
        [[2.5 * stride, 2.5 * stride, 1, 0.9, 4, 4], [0.5 * stride, 7.5 * stride, 1, 0.8, 4, 4]]
    )
    counts = match_counts(peaks, heat, 2, 1.5, stride)
    assert counts[1].tolist() == [1, 1, 1]  # TP, FP, FN
    assert detection_scores(counts)["f1"][1] == 0.5


def _blob_scenes(folder: Path, count: int = 3) -> tuple[Path, Path]:
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 40, (256, 256), dtype=np.uint8)
        mask = np.zeros((256, 256), np.uint8)
        for _ in range(12):
            y, x = rng.integers(4, 244, 2)
            image[y : y + 8, x : x + 8] = 250
            mask[y : y + 8, x : x + 8] = 1
        tifffile.imwrite(images / f"s{i}.tif", image)
        tifffile.imwrite(masks / f"s{i}.tif", mask)
    return images, masks


def test_xt_train_trains_a_detection_head_that_finds_the_objects(tmp_path: Path, capsys) -> None:
    config = {
        "tiling": {"region_size": 64},
        "region_encoder": {"name": "test_convnext", "in_chans": 1},
        "context_encoder": {"kind": "transformer_xl", "dim": 32, "depth": 1, "chunk_regions": 4},
        "head": {
            "task": "detection",
            "num_classes": 2,
            "class_names": ["background", "blob"],
            "detection_threshold": 0.3,
        },
        "train": {
            "crop_size": 128,
            "batch_size": 4,
            "max_steps": 120,
            "val_every": 120,
            "val_crops": 4,
            "lr": 3e-3,
            "warmup_steps": 10,
        },
    }
    path = tmp_path / "det.json"
    path.write_text(json.dumps(config))
    images, masks = _blob_scenes(tmp_path / "data")
    out = tmp_path / "det.safetensors"
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--config",
                str(path),
                "--out",
                str(out),
                "--seed",
                "0",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "val F1: background nan, blob" in printed and "recall" in printed
    val_f1 = float(printed.split("blob ")[1].split(";")[0])
    assert val_f1 > 0.5, printed
    model = load_checkpoint(out)
    image = tifffile.imread(images / "s0.tif")
    truth = tifffile.imread(masks / "s0.tif")
    rows = np.concatenate(
        [
            e.detections
            for e in run_inference(image, model, batch_size=4)
            if isinstance(e, RegionDone) and e.detections is not None
        ]
    )
    centres = rows[:, :2]
    hits = 0
    from scipy import ndimage

    labelled, n = ndimage.label(truth)
    for box in ndimage.find_objects(labelled):
        c = np.array([(box[0].start + box[0].stop) / 2, (box[1].start + box[1].stop) / 2])
        hits += bool(len(centres) and np.linalg.norm(centres - c, axis=1).min() <= 6)
    print(f"val F1 {val_f1}; found {hits} of {n} objects with {len(rows)} detections")
    assert hits >= 0.7 * n, f"found {hits} of {n} objects ({len(rows)} detections)"
    # an object on a region border is reported once (xt_engine.tasks.detection), not by both
    # regions: no two rows one heat-map cell apart, and at most one stray detection
    apart = np.abs(centres[:, None] - centres[None]).max(axis=2) + 99 * np.eye(len(rows))
    assert apart.min() > model.output_stride, rows[np.argwhere(apart <= model.output_stride)]
    assert len(rows) <= n + 1
