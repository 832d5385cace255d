"""Tissue-aware runs: what a foreground mask saves, and what it costs in agreement.

A synthetic brightfield-like slide (uint8, 0.5 um pixels, a 4x-smaller pyramid level): bright
glass with faint noise, and tissue (the synthetic SAR texture, darker than the glass) in
blobs covering ``--tissue`` of the regions. The bundled demo model (128 px regions, 1 channel)
runs twice in one process, fp32 on the CPU: ``--foreground none`` and ``--foreground otsu``
(best of ``--repeats`` each, the order alternated). Targets:

* time: the masked run within 1.2x of (fraction of regions run x the full run's time);
* agreement: labels on the regions the masked run keeps agree >= 99% with the full run (they
  differ only because the context no longer sees the glass regions).

Prints a table, writes ``tissue.json`` and ``tissue.png`` (the slide, the regions run) to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from xt_engine import RegionDone, run_inference
from xt_engine.io import ImageSource
from xt_engine.synthetic import make_sar_scene
from xt_engine.weights.loading import load_model

REGION = 128


def make_slide(side: int, tissue: float, seed: int = 0) -> tuple[ImageSource, np.ndarray]:
    """-> the slide and its (rows, cols) bool tissue-region map."""
    rng = np.random.default_rng(seed)
    texture, _ = make_sar_scene((side, side), seed=seed)
    cells = side // REGION
    blobs = ndimage.gaussian_filter(rng.random((cells, cells)), 2.0)
    regions = blobs > np.quantile(blobs, 1.0 - tissue)
    inside = np.kron(regions, np.ones((REGION, REGION), bool))
    glass = (235 + rng.integers(0, 6, (side, side))).astype(np.uint8)
    tissue_pixels = (texture.astype(np.float32) * 0.8).astype(np.uint8)  # darker than glass
    image = np.where(inside, tissue_pixels, glass)
    low = image.reshape(side // 4, 4, side // 4, 4).mean(axis=(1, 3)).astype(np.uint8)
    source = ImageSource([image, low], "yx", pixel_size=(0.5, 0.5), unit="micrometer",
                         name="synthetic-slide")
    return source, regions


def run(source: ImageSource, model, foreground: str) -> tuple[float, dict[int, np.ndarray]]:
    start = time.perf_counter()
    labels = {
        e.region.index: e.labels
        for e in run_inference(source, model, batch_size=16, foreground=foreground)
        if isinstance(e, RegionDone) and e.labels is not None
    }
    return time.perf_counter() - start, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--tissue", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source, truth = make_slide(args.side, args.tissue)
    model = load_model("xt_demo_sar")
    times: dict[str, list[float]] = {"none": [], "otsu": []}
    labels: dict[str, dict[int, np.ndarray]] = {}
    for repeat in range(args.repeats):
        for way in ("none", "otsu") if repeat % 2 == 0 else ("otsu", "none"):
            seconds, labels[way] = run(source, model, way)
            times[way].append(seconds)
    full, masked = min(times["none"]), min(times["otsu"])
    kept = sorted(labels["otsu"])
    fraction = len(kept) / len(labels["none"])
    agree = np.mean(
        np.concatenate([(labels["otsu"][i] == labels["none"][i]).ravel() for i in kept])
    )
    ran = np.zeros(truth.size, bool)
    ran[kept] = True
    missed = int((truth.ravel() & ~ran).sum())
    rows = {
        "side": args.side,
        "regions": len(labels["none"]),
        "regions_run": len(kept),
        "fraction_run": round(fraction, 4),
        "tissue_regions_missed": missed,
        "full_s": round(full, 3),
        "masked_s": round(masked, 3),
        "time_ratio_to_fraction": round(masked / (fraction * full), 3),
        "time_target": 1.2,
        "time_pass": masked <= 1.2 * fraction * full,
        "agreement_on_run_regions": round(float(agree), 5),
        "agreement_target": 0.99,
        "agreement_pass": bool(agree >= 0.99),
    }
    print(f"{'figure':28s} {'value':>10s} {'target':>8s} {'pass':>5s}")
    print(f"{'regions run / all':28s} {len(kept):>5d}/{len(labels['none']):<4d}")
    print(f"{'full run (s)':28s} {full:10.2f}")
    print(f"{'masked run (s)':28s} {masked:10.2f}")
    print(
        f"{'masked / (fraction x full)':28s} {rows['time_ratio_to_fraction']:10.3f} "
        f"{'<= 1.2':>8s} {str(rows['time_pass']):>5s}"
    )
    print(
        f"{'label agreement, run regions':28s} {agree:10.4f} {'>= 0.99':>8s} "
        f"{str(rows['agreement_pass']):>5s}"
    )
    print(f"{'tissue regions missed':28s} {missed:10d}")
    (out / "tissue.json").write_text(json.dumps(rows, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    axes[0].imshow(source.levels[1], cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("synthetic slide (level 1)", fontsize=9)
    cells = args.side // REGION
    axes[1].imshow(ran.reshape(cells, cells), cmap="viridis")
    axes[1].set_title(f"regions run: {len(kept)} of {len(labels['none'])}", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(out / "tissue.png", dpi=100)


if __name__ == "__main__":
    main()
