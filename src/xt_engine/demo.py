"""The walking skeleton's main job: synthetic scene -> xT -> OME-Zarr + overview PNG + summary."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import zarr

from xt_engine.colors import class_colors
from xt_engine.io import source_from_arrays
from xt_engine.overview import write_overview
from xt_engine.runtime import Finished, run_inference
from xt_engine.store.result_store import LABELS_PATH
from xt_engine.synthetic import SAR_CLASS_NAMES, make_sar_scene
from xt_engine.train.metrics import confusion, scores
from xt_engine.train.recipes import DEMO_SAR, DEMO_SAR_NEAR_SHORE_PX
from xt_engine.weights.loading import bundled_checkpoint, load_model


def run_demo(
    out_dir: Path,
    *,
    size: int = 4096,
    seed: int = 0,
    model_spec: str = "xt_demo_sar",
    batch_size: int = 8,
    progress: Callable[[Iterable[object]], object],
    overwrite: bool = False,
) -> Finished:
    """Run the demo and print its summary; returns the run's Finished event."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    vessels = max(4, DEMO_SAR["data"]["vessels"] * size * size // DEMO_SAR["data"]["size"] ** 2)
    image, mask = make_sar_scene(
        (size, size), seed=seed, num_vessels=vessels, near_shore_px=DEMO_SAR_NEAR_SHORE_PX
    )
    scene_s = time.perf_counter() - t0
    model = load_model(model_spec)
    source = source_from_arrays(image, "yx", name=f"synthetic_sar_{size}_seed{seed}")
    result = out_dir / "result.zarr"
    finished = progress(
        run_inference(source, model, output=result, batch_size=batch_size, overwrite=overwrite)
    )
    assert isinstance(finished, Finished)
    labels = zarr.open_group(str(result), mode="r")[f"{LABELS_PATH}/0"]
    if not isinstance(labels, zarr.Array):
        raise RuntimeError(f"{result} has no label array at {LABELS_PATH}/0")
    png = write_overview(source, labels, class_colors(model.config.head), out_dir / "overview.png")
    cfg = model.config
    print(f"image        {size} x {size} px (synthetic SAR scene, seed {seed}, {scene_s:.1f} s)")
    print(
        f"model        {model_spec}: {cfg.region_encoder.name} -> {cfg.context_encoder.kind} -> "
        f"{cfg.head.task} ({cfg.head.num_classes} classes)"
    )
    print(f"regions      {finished.total} of {cfg.tiling.region_size} px")
    print(f"seconds      {finished.seconds:.2f}")
    print(f"regions/s    {finished.done / max(finished.seconds, 1e-9):.1f}")
    print(f"peak memory  {finished.peak_rss_mb:.0f} MiB (RSS)")
    if cfg.head.num_classes == len(SAR_CLASS_NAMES):
        f1 = scores(_confusion(labels, mask, cfg.head.num_classes))["f1"]
        trained = (
            "trained"
            if bundled_checkpoint(model_spec) or model_spec.endswith(".safetensors")
            else "UNTRAINED (random weights)"
        )
        print(
            f"F1 vs truth  {trained}: "
            + ", ".join(
                f"{name} {value:.3f}" for name, value in zip(SAR_CLASS_NAMES, f1, strict=True)
            )
        )
    print(f"wrote        {result}  {png}")
    return finished


def _confusion(
    labels: zarr.Array, truth: np.ndarray, num_classes: int, band: int = 1024
) -> np.ndarray:
    """(K, K) confusion of predicted ``labels`` (zarr, read in bands) against ``truth``."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for y in range(0, truth.shape[0], band):
        matrix += confusion(np.asarray(labels[y : y + band]), truth[y : y + band], num_classes)
    return matrix
