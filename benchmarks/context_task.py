"""The context benchmark: region-only against xT context encoders on the synthetic SAR task.

Same backbone, data and training budget for every kind (the demo-sar recipe with the context kind
swapped; attention kinds bidirectional; ``KIND+distance`` adds the 2-D distance bias). Each model
is trained with ``xt train``'s loop, then run
with ``run_inference`` over held-out scenes. Reported per kind: per-class F1 of the two vessel
classes and their macro-F1, the accuracy of the near/offshore decision on vessel pixels whose
128 px region holds no land (where one region alone cannot tell), parameters, regions/s.
Writes ``context_task.json`` (+ PNG with matplotlib) to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from context_suite import parse_overrides  # benchmarks/ is on sys.path when run as a script
from xt_engine import RegionDone, XTConfig, run_inference
from xt_engine.synthetic import make_sar_scene
from xt_engine.train.config import TrainConfig
from xt_engine.train.data import find_pairs, load_pairs, split_pairs
from xt_engine.train.metrics import confusion, scores
from xt_engine.train.recipes import DEMO_SAR, DEMO_SAR_NEAR_SHORE_PX, write_demo_data
from xt_engine.train.trainer import train
from xt_engine.weights.checkpoint import load_checkpoint


def evaluate(ckpt: Path, seeds: list[int], size: int, vessels: int) -> dict[str, float]:
    model = load_checkpoint(ckpt)
    r = model.region_size
    matrix = np.zeros((4, 4), np.int64)
    hard_right = hard_total = 0
    seconds = regions = 0.0
    for seed in seeds:
        image, truth = make_sar_scene(
            (size, size), seed=seed, num_vessels=vessels, near_shore_px=DEMO_SAR_NEAR_SHORE_PX
        )
        pred = np.zeros_like(truth)
        start = time.perf_counter()
        for event in run_inference(image, model, batch_size=16):
            if isinstance(event, RegionDone):
                g = event.region
                pred[g.y0 : g.y1, g.x0 : g.x1] = event.labels
                regions += 1
        seconds += time.perf_counter() - start
        matrix += confusion(pred, truth, 4)
        land_in_region = truth.reshape(size // r, r, size // r, r).__eq__(1).any(axis=(1, 3))
        no_land = ~np.repeat(np.repeat(land_in_region, r, axis=0), r, axis=1)
        hard = no_land & (truth >= 2)
        hard_right += int((pred[hard] == truth[hard]).sum())
        hard_total += int(hard.sum())
    f1 = scores(matrix)["f1"]
    return {
        "f1_near_shore": f1[2],
        "f1_offshore": f1[3],
        "vessel_macro_f1": (f1[2] + f1[3]) / 2,
        "hard_vessel_accuracy": hard_right / max(hard_total, 1),
        "hard_pixels": hard_total,
        "regions_per_s": regions / seconds,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


MEMORY_CHILD = r"""
import json, sys
import numpy as np, torch
from xt_engine import create_model, run_inference
from xt_engine.runtime.inference import peak_rss_mb
from xt_engine.synthetic import make_sar_scene
config, batch = json.loads(sys.argv[1]), int(sys.argv[2])
model = create_model(config).eval()
image, _ = make_sar_scene((1024, 1024), seed=900)
rss = peak_rss_mb  # VmHWM: the child must not inherit the trainer's peak
for _ in run_inference(image[:128, :128], model, batch_size=1):  # warm: allocator, threads
    pass
before = rss()
for _ in run_inference(image, model, batch_size=batch):
    pass
print(json.dumps({"peak_rss_mb": rss(), "per_region_mb": (rss() - before) / batch}))
"""


def memory_per_region(config: dict, batch: int = 16) -> dict[str, float]:
    """Peak RSS of streaming inference in a fresh process, and its growth over a warm-up run
    divided by the batch: the activation memory one region costs (weights do not matter)."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, json.dumps(config), str(batch)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["none", "transformer_xl+distance", "sliding_window", "hyper", "mamba"],
        help="context kinds; KIND+distance adds the 2-D distance bias (transformer_xl only)",
    )
    parser.add_argument("--steps", type=int, default=600, help="the demo recipe's budget")
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[900, 901])
    parser.add_argument(
        "--keep-checkpoints", action="store_true", help="copy each trained model to --out"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override the demo recipe for every kind (JSON values), e.g. "
        "context_encoder.relative_range=6",
    )
    parser.add_argument(
        "--merge", nargs="+", metavar="JSON", help="only tabulate and plot earlier runs' JSON"
    )
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge(args.merge, out)
        return
    spec = DEMO_SAR["data"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="xt-context-") as tmp:
        images, masks = write_demo_data(
            Path(tmp) / "data", spec["scenes"], spec["size"], spec["vessels"]
        )
        for kind in args.kinds:
            recipe = copy.deepcopy(DEMO_SAR)
            recipe.pop("data")
            for section, values in overrides.items():
                recipe[section] |= values
            cfg = TrainConfig.from_dict(
                {**recipe.pop("train"), "max_steps": args.steps, "val_every": args.steps}
            )
            base_kind, _, option = kind.partition("+")  # "transformer_xl+distance"
            recipe["context_encoder"] |= {
                "kind": base_kind,
                "bidirectional": base_kind != "none",
                "distance_bias": option == "distance",
            }
            config = XTConfig.from_dict(recipe)
            pairs = load_pairs(find_pairs(images, masks, None), 4, cfg.seed)
            train_pairs, val_pairs = split_pairs(pairs, 0.2)
            ckpt = Path(tmp) / f"{kind}.safetensors"
            torch.manual_seed(0)
            started = time.perf_counter()
            for _ in train(config, cfg, train_pairs, val_pairs, ckpt):
                pass
            row = {
                "kind": kind,
                "options": " ".join(args.set),
                "train_s": time.perf_counter() - started,
                **evaluate(ckpt, args.eval_seeds, spec["size"], spec["vessels"]),
                **memory_per_region(config.to_dict()),
            }
            rows.append(row)
            if args.keep_checkpoints:
                shutil.copy(ckpt, out / f"context_task_{kind}.safetensors")
            print(json.dumps(row), flush=True)
    report(rows, out, args.steps)


def report(rows: list[dict], out: Path, steps: int) -> None:
    """Print the table, write ``context_task.json`` and the bar plot ``context_task.png``."""
    print(
        f"\n{'context':24s} {'near F1':>8s} {'off F1':>8s} {'macro':>7s} {'hard acc':>9s} "
        f"{'params M':>9s} {'MiB/region':>11s} {'regions/s':>10s}"
    )
    for r in rows:
        print(
            f"{_label(r):24s} {r['f1_near_shore']:8.3f} {r['f1_offshore']:8.3f} "
            f"{r['vessel_macro_f1']:7.3f} {r['hard_vessel_accuracy']:9.3f} {r['params_m']:9.2f} "
            f"{r['per_region_mb']:11.2f} {r['regions_per_s']:10.1f}"
        )
    (out / "context_task.json").write_text(json.dumps({"steps": steps, "rows": rows}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["vessel_macro_f1"] for r in rows], 0.4, label="vessel macro-F1")
    ax.bar(
        x + 0.2,
        [r["hard_vessel_accuracy"] for r in rows],
        0.4,
        label="accuracy, land outside the region",
    )
    ax.set_xticks(x, [_label(r).replace("+", "\n+").replace(" ", "\n") for r in rows])
    ax.set_ylim(0, 1)
    ax.set_title(f"context benchmark: same backbone, data and budget ({steps} steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "context_task.png", dpi=120)


def _label(row: dict) -> str:
    """The row's kind, with its ``--set`` options when it had any."""
    return f"{row['kind']} {row['options']}" if row.get("options") else row["kind"]


def merge(paths: list[str], out: Path) -> None:
    """Rows of several runs (same step budget) in one table and plot."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    steps = {run["steps"] for run in runs}
    if len(steps) != 1:
        raise SystemExit(f"runs with different budgets ({sorted(steps)} steps) do not compare")
    report([row for run in runs for row in run["rows"]], out, steps.pop())


if __name__ == "__main__":
    main()
