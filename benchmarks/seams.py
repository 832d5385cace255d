"""Seams at region borders: no overlap, overlap with centre crops, overlap with blending.

The bundled demo model (128 px regions) on a 1024 x 1024 synthetic SAR scene (fp32, CPU), run
three ways with ``probabilities=True``: ``overlap=0``; ``overlap=16, blend=False`` (each tile is
its window's centre); ``overlap=16`` with blending (the default). The seam score is the mean
absolute change of the land probability between neighbouring pixels across tile borders,
divided by the same mean inside tiles (1.0: borders look like anywhere else); also the fraction
of label changes across borders against inside. Prints a table and writes ``seams.json`` and
``seams.png`` (land probability near a tile corner, each way) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from xt_engine import RegionDone, run_inference
from xt_engine.synthetic import make_sar_scene
from xt_engine.weights.loading import load_model

LAND = 1  # the demo model's class 1


def mosaic(image: np.ndarray, model, **kw) -> tuple[np.ndarray, np.ndarray, int]:
    """-> land probability (H, W), labels (H, W), tile side."""
    h, w = image.shape
    prob = np.zeros((h, w), np.float32)
    labels = np.zeros((h, w), np.uint8)
    tile = 0
    for event in run_inference(image, model, batch_size=16, probabilities=True, **kw):
        if isinstance(event, RegionDone):
            g = event.region
            tile = max(tile, g.height)
            prob[g.y0 : g.y1, g.x0 : g.x1] = event.probabilities[LAND]
            labels[g.y0 : g.y1, g.x0 : g.x1] = event.labels
    return prob, labels, tile


def seam_scores(prob: np.ndarray, labels: np.ndarray, tile: int) -> dict[str, float]:
    steps, flips = [], []
    for axis in (0, 1):
        dp = np.abs(np.diff(prob, axis=axis))
        dl = np.diff(labels.astype(np.int16), axis=axis) != 0
        border = (np.arange(dp.shape[axis]) + 1) % tile == 0  # between pixel i and i+1
        shape = [1, 1]
        shape[axis] = -1
        border = np.broadcast_to(border.reshape(shape), dp.shape)
        steps.append((dp[border].mean(), dp[~border].mean()))
        flips.append((dl[border].mean(), dl[~border].mean()))
    step_b, step_i = np.mean([s[0] for s in steps]), np.mean([s[1] for s in steps])
    flip_b, flip_i = np.mean([f[0] for f in flips]), np.mean([f[1] for f in flips])
    return {
        "prob_step_border": float(step_b),
        "prob_step_inside": float(step_i),
        "seam_score": float(step_b / step_i),
        "label_flip_border": float(flip_b),
        "label_flip_inside": float(flip_i),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--side", type=int, default=1024)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, _ = make_sar_scene((args.side, args.side), seed=11)
    model = load_model("xt_demo_sar")
    ways = {
        "no overlap": {"overlap": 0},
        "overlap 16, centre crop": {"overlap": 16, "blend": False},
        "overlap 16, blended": {"overlap": 16},
    }
    rows, maps = {}, {}
    for name, kw in ways.items():
        prob, labels, tile = mosaic(image, model, **kw)
        rows[name] = {"tile": tile, **seam_scores(prob, labels, tile)}
        maps[name] = (prob, tile)
    print(f"{'way':26s} {'tile':>5s} {'seam score':>11s} {'label flips border/inside':>26s}")
    for name, r in rows.items():
        flips = f"{r['label_flip_border']:.4f} / {r['label_flip_inside']:.4f}"
        print(f"{name:26s} {r['tile']:5d} {r['seam_score']:11.2f} {flips:>26s}")
    (out / "seams.json").write_text(json.dumps(rows, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    # the same spot for all three: a corner shared by both tile grids (128 and 96 px: every
    # 384 px), where the plain grid's land probability varies most
    (p0, t0), (_, t1) = maps["no overlap"], maps["overlap 16, blended"]
    shared = int(np.lcm(t0, t1))
    corners = [
        (y, x)
        for y in range(shared, args.side - 47, shared)
        for x in range(shared, args.side - 47, shared)
    ]
    cy, cx = max(corners, key=lambda c: p0[c[0] - 48 : c[0] + 48, c[1] - 48 : c[1] + 48].std())
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
    for ax, (name, (prob, _tile)) in zip(axes, maps.items(), strict=True):
        ax.imshow(prob[cy - 48 : cy + 48, cx - 48 : cx + 48], cmap="magma", vmin=0, vmax=1)
        ax.axhline(47.5, color="cyan", lw=0.6, alpha=0.7)
        ax.axvline(47.5, color="cyan", lw=0.6, alpha=0.7)
        ax.set_title(f"{name}: seam score {rows[name]['seam_score']:.2f}", fontsize=9)
        ax.set_axis_off()
    fig.text(
        0.5,
        0.02,
        f"land probability, 96 x 96 px around the tile corner ({cy}, {cx}); cyan: tile borders",
        ha="center",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out / "seams.png", dpi=110)


if __name__ == "__main__":
    main()
