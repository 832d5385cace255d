"""Training recipes kept in the repository: ``xt train --recipe NAME``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from xt_engine.errors import ConfigError
from xt_engine.io import source_from_arrays
from xt_engine.synthetic import SAR_CLASS_COLORS, SAR_CLASS_NAMES, make_sar_scene
from xt_engine.synthetic.context_tasks import (
    CONTEXT_TASK_CLASS_COLORS,
    CONTEXT_TASK_CLASS_NAMES,
    CONTEXT_TASKS,
    make_context_scene,
)
from xt_engine.train.data import Pair, rare_pixels

# The demo model: 1-channel SAR, 128 px regions, a tiny ConvNeXt, a bidirectional
# Transformer-XL (land that decides a vessel's class may lie after it in raster order) with the
# 2-D distance bias (whether land lies within 300 px is a question about 2-D distances); the
# relative bias and the position scale are the context encoder's defaults (6 and 0.1).
DEMO_SAR_NEAR_SHORE_PX = 300
DEMO_SAR: dict[str, Any] = {
    "tiling": {"region_size": 128},
    "region_encoder": {"name": "test_convnext", "in_chans": 1},
    "context_encoder": {
        "kind": "transformer_xl",
        "dim": 64,
        "depth": 2,
        "num_heads": 4,
        "bidirectional": True,
        "memory_tokens": 1024,
        "distance_bias": True,
        # 8-region context chunks: the memory (1024 tokens = 64 regions) covers a whole
        # training crop, so training gives what one 64-region chunk would, and inference over a
        # scene runs ~1.3x faster than with 64-region chunks (same F1 on the demo scene)
        "chunk_regions": 8,
    },
    "head": {
        "task": "segmentation",
        "num_classes": 4,
        "class_names": list(SAR_CLASS_NAMES),
        "class_colors": list(SAR_CLASS_COLORS),
        "decoder_dim": 32,
    },
    "train": {
        "crop_size": 1024,
        "batch_size": 2,
        "lr": 2e-3,
        "max_steps": 600,
        "warmup_steps": 30,
        "positive_ratio": 0.7,
        "class_weights": [1.0, 1.0, 4.0, 4.0],
        "val_every": 100,
        "val_crops": 8,
        "seed": 0,
        "position_jitter": 256,
        # off (xt train's defaults are 0.1 and true): on this task they do not help (every
        # scene holds both vessel classes; docs/benchmarks.md, the context benchmark's options)
        "context_aux_weight": 0.0,
        "balance_classes": False,
    },
    "data": {"scenes": 6, "size": 2048, "vessels": 60},
}
RECIPES = {"demo-sar": DEMO_SAR}


def recipe(name: str) -> dict[str, Any]:
    if name not in RECIPES:
        raise ConfigError(f"no recipe named {name!r}", f"use one of {', '.join(RECIPES)}")
    return RECIPES[name]


def _write_scenes(
    folder: Path,
    names: list[str],
    make: Callable[[int], tuple[np.ndarray, np.ndarray]],
    **tiff: Any,
) -> tuple[Path, Path]:
    """``make(i)``'s (image, mask) as TIFFs ``names[i]`` in ``folder/images`` and
    ``folder/masks`` (kept when already there)."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        if (images / name).exists() and (masks / name).exists():
            continue
        image, mask = make(i)
        tifffile.imwrite(images / name, image, compression="zlib", **tiff)
        tifffile.imwrite(masks / name, mask, compression="zlib", **tiff)
    return images, masks


def write_demo_data(
    folder: Path, scenes: int, size: int, vessels: int, seed: int = 100
) -> tuple[Path, Path]:
    """Synthetic SAR scenes and masks as TIFFs in ``folder/images`` and ``folder/masks``
    (kept when already there)."""
    return _write_scenes(
        folder,
        [f"scene{i:02d}.tif" for i in range(scenes)],
        lambda i: make_sar_scene(
            (size, size), seed=seed + i, num_vessels=vessels, near_shore_px=DEMO_SAR_NEAR_SHORE_PX
        ),
        tile=(256, 256),
    )


# The context task suite (xt_engine.synthetic.context_tasks): a tiny ConvNeXt on 64 px regions
# of 512 px scenes (8 x 8 regions, 2 x 2 tokens each), one crop covering the scene, the context
# over the whole scene (memory >= its 256 tokens); no rotations or flips ("offset" is about
# what lies above). What made context learn the suite (docs/benchmarks.md, context task
# suite): the token probe (context_aux_weight), batches mixing A and B scenes
# (balance_classes), the 2-D distance bias, the 2-D relative bias over +-6 tokens (+-3 regions:
# "exactly 2 regions above"), and a position embedding at 0.1.
def context_task_recipe(task: str) -> dict[str, Any]:
    """The suite recipe of ``task`` (one of :data:`~xt_engine.synthetic.CONTEXT_TASKS`)."""
    if task not in CONTEXT_TASKS:
        raise ConfigError(f"no context task {task!r}", f"use one of {', '.join(CONTEXT_TASKS)}")
    return {
        "tiling": {"region_size": 64},
        "region_encoder": dict(DEMO_SAR["region_encoder"]),
        # the demo model's context: bidirectional, distance bias, memory over the whole scene,
        # and the context encoder's defaults for the rest (relative_range 6, position_scale 0.1)
        "context_encoder": dict(DEMO_SAR["context_encoder"]),
        "head": DEMO_SAR["head"]
        | {
            "class_names": list(CONTEXT_TASK_CLASS_NAMES),
            "class_colors": list(CONTEXT_TASK_CLASS_COLORS),
        },
        "train": {
            "crop_size": 512,
            "batch_size": 2,
            "lr": 2e-3,
            # the budget at which every task and seed of the suite learns (docs/benchmarks.md):
            # at 1000 steps some seeds are still on the plateau
            "max_steps": 2500,
            "warmup_steps": 30,
            "positive_ratio": 0.0,
            "class_weights": [1.0, 4.0, 4.0, 2.0],
            "val_every": 100,
            "val_crops": 2,
            "seed": 0,
            "position_jitter": 256,
            "augment": False,
            # the token probe and balanced batches at xt train's defaults (TrainConfig: weight
            # 0.1, balanced), which learn every task on 3 seeds (docs/benchmarks.md)
        },
        "data": {"task": task, "scenes": 200, "size": 512, "region": 64},
    }


for _task in CONTEXT_TASKS:
    RECIPES[f"context-{_task.replace('_', '-')}"] = context_task_recipe(_task)


def context_task_pairs(task: str, seeds: Iterable[int], spec: dict[str, Any]) -> list[Pair]:
    """Training pairs of ``task``'s scenes, in memory, one per seed (``spec``: a recipe's
    ``data``)."""
    pairs = []
    for seed in seeds:
        scene = make_context_scene(task, spec["size"], spec["region"], seed=seed)
        mask = source_from_arrays(scene.mask)
        positives = rare_pixels(mask, len(CONTEXT_TASK_CLASS_NAMES), np.random.default_rng(seed))
        pairs.append(Pair(f"{task}-{seed}", source_from_arrays(scene.image), mask, positives))
    return pairs


def write_context_task_data(
    folder: Path, task: str, scenes: int, size: int, region: int, seed: int = 1000
) -> tuple[Path, Path]:
    """``task``'s scenes and masks as TIFFs in ``folder/images`` and ``folder/masks``."""

    def make(i: int) -> tuple[np.ndarray, np.ndarray]:
        scene = make_context_scene(task, size, region, seed=seed + i)
        return scene.image, scene.mask

    return _write_scenes(folder, [f"{task}{i:03d}.tif" for i in range(scenes)], make)
