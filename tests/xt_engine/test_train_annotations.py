"""Training from QuPath GeoJSON exports (xt_engine.train.annotations): the annotations are
rasterised per crop and give the same targets the label mask they were traced from gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from rasterio import features

from xt_engine import InputError, load_checkpoint
from xt_engine.cli import main
from xt_engine.synthetic import make_sar_scene
from xt_engine.train.annotations import AnnotationMask, read_annotations
from xt_engine.train.data import find_pairs, load_pairs

CLASSES = ["background", "land", "vessel_near_shore", "vessel_offshore"]
CONFIG = {
    "tiling": {"region_size": 64},
    "region_encoder": {"name": "test_convnext", "in_chans": 1},
    "context_encoder": {"kind": "transformer_xl", "dim": 32, "depth": 1, "chunk_regions": 2},
    "head": {"task": "segmentation", "num_classes": 4, "class_names": CLASSES},
    "train": {"crop_size": 128, "batch_size": 2, "max_steps": 3, "val_every": 3, "val_crops": 2},
}


def qupath_export(mask: np.ndarray, path: Path, with_background: bool = True) -> None:
    """What QuPath's "Export objects as GeoJSON" writes for annotations traced from ``mask``:
    a FeatureCollection of annotation features with a classification name and colour (and an
    unclassified one, which carries no target)."""
    out = []
    for geometry, value in features.shapes(mask.astype(np.uint8)):
        if int(value) == 0 and not with_background:
            continue
        out.append({
            "type": "Feature",
            "id": f"{len(out):08x}-0000-0000-0000-000000000000",
            "geometry": geometry,
            "properties": {
                "objectType": "annotation",
                "classification": {"name": CLASSES[int(value)], "color": [255, 0, 0]},
                "isLocked": False,
            },
        })
    out.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]},
                "properties": {"objectType": "annotation"}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": out}))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    images, masks, notes = tmp_path / "images", tmp_path / "masks", tmp_path / "annotations"
    for folder in (images, masks, notes):
        folder.mkdir()
    for i in range(2):
        image, mask = make_sar_scene((200, 260), seed=i, num_vessels=6, near_shore_px=40)
        tifffile.imwrite(images / f"s{i}.tif", image)
        tifffile.imwrite(masks / f"s{i}.tif", mask)
        qupath_export(mask, notes / f"s{i}.geojson")
    return images, masks, notes


def test_annotations_give_the_targets_of_the_mask_they_were_traced_from(folders) -> None:
    images, masks, notes = folders
    from_masks = load_pairs(find_pairs(images, masks, None), 4, 0)
    from_notes = load_pairs(find_pairs(images, notes, None), 4, 0, CLASSES)
    rng = np.random.default_rng(0)
    for a, b in zip(from_masks, from_notes, strict=True):
        np.testing.assert_array_equal(a.mask.read(0, 0, 0, 200, 260), b.mask.read(0, 0, 0, 200, 260))
        for _ in range(5):  # any box, as a crop reads it
            y0, x0 = rng.integers(0, 150), rng.integers(0, 200)
            np.testing.assert_array_equal(
                a.mask.read(0, y0, x0, y0 + 50, x0 + 60), b.mask.read(0, y0, x0, y0 + 50, x0 + 60)
            )
        np.testing.assert_array_equal(a.positives, b.positives)  # the same rare-class index


def test_unlabelled_pixels_are_ignored_or_background(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    qupath_export(mask, tmp_path / "a.geojson", with_background=False)
    notes = read_annotations(tmp_path / "a.geojson", CLASSES)
    ignored = AnnotationMask(notes, (64, 64))[0:64, 0:64]
    assert (ignored[10:30, 10:30] == 1).all() and (ignored[mask == 0] == -1).all()
    background = AnnotationMask(notes, (64, 64), "background")[0:64, 0:64]
    np.testing.assert_array_equal(background, mask)


def test_points_paint_discs_and_unknown_classes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.geojson"
    path.write_text(json.dumps([{  # QuPath may write a bare list of features
        "type": "Feature", "geometry": {"type": "Point", "coordinates": [20, 30]},
        "properties": {"objectType": "detection", "classification": {"name": "land"}}}]))
    disc = AnnotationMask(read_annotations(path, CLASSES, point_radius=3), (64, 64))[0:64, 0:64]
    assert disc[30, 20] == 1 and (disc == 1).sum() in range(20, 40) and disc[30, 30] == -1
    path.write_text(json.dumps([{
        "type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]},
        "properties": {"classification": {"name": "Tumor"}}}]))
    with pytest.raises(InputError, match=r"classes \['Tumor'\].*head.class_names"):
        read_annotations(path, CLASSES)


def test_xt_train_from_annotations(folders, tmp_path: Path) -> None:
    images, _, notes = folders
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(CONFIG))
    out = tmp_path / "model.safetensors"
    assert main(["train", "--images", str(images), "--annotations", str(notes), "--config",
                 str(config), "--out", str(out)]) == 0
    assert load_checkpoint(out).config.head.class_names == tuple(CLASSES)
