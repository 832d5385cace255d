"""The context task suite: every long-range dependency task x context kind, seeds, one budget.

Each cell trains the suite recipe (:func:`xt_engine.train.recipes.context_task_recipe`: a tiny
ConvNeXt on 64 px regions of 512 px scenes, one crop covering the scene) with ``xt train``'s
loop for ``--steps`` steps, the context kind swapped (``KIND`` causal, ``KIND:bi``
bidirectional), then runs ``run_inference`` over held-out scenes and scores the context-dependent
accuracy (:func:`xt_engine.synthetic.context_accuracy`: balanced accuracy of the A/B decision on
objects whose region holds no cue; chance is 0.5). Reported per task and kind: mean and spread
over ``--seeds``, the share of hard objects not found at all, seconds of training.
Writes ``context_suite.json`` after every cell (``--merge`` tabulates earlier files) and a PNG.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xt_engine import RegionDone, XTConfig, run_inference
from xt_engine.synthetic import (
    CONTEXT_TASKS,
    context_accuracy,
    make_context_scene,
    score_context_task,
)
from xt_engine.train.config import TrainConfig
from xt_engine.train.recipes import context_task_pairs, context_task_recipe
from xt_engine.train.trainer import train
from xt_engine.weights.checkpoint import load_checkpoint

KINDS = ("none", "transformer_xl", "transformer_xl:bi", "hyper:bi", "sliding_window:bi", "mamba:bi")


def evaluate(ckpt: Path, task: str, size: int, region: int, scenes: int) -> dict[str, float]:
    model = load_checkpoint(ckpt)
    total: dict[str, float] = {}
    for seed in range(9000, 9000 + scenes):
        scene = make_context_scene(task, size, region, seed=seed)
        pred = np.zeros_like(scene.mask)
        for event in run_inference(scene.image, model, batch_size=16):
            if isinstance(event, RegionDone):
                g = event.region
                pred[g.y0 : g.y1, g.x0 : g.x1] = event.labels
        for key, value in score_context_task(pred, scene).items():
            total[key] = total.get(key, 0.0) + value
    hard = total["hard_a"] + total["hard_b"]
    return {"accuracy": context_accuracy(total), "missed": total["missed"] / max(hard, 1)}


def parse_overrides(items: list[str]) -> dict[str, dict[str, object]]:
    """``SECTION.KEY=JSON`` items (``train.lr=1e-3``) -> {section: {key: value}}."""
    out: dict[str, dict[str, object]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. train.lr=1e-3")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(section, {})[name] = parsed
    return out


def run_cell(
    task: str,
    kind: str,
    seed: int,
    steps: int | None,
    scenes: int,
    tmp: Path,
    overrides: dict[str, dict[str, object]] | None = None,
) -> dict:
    recipe = copy.deepcopy(context_task_recipe(task))
    for section, values in (overrides or {}).items():
        recipe[section] |= values
    spec = recipe.pop("data")
    base, _, mode = kind.partition(":")
    recipe["context_encoder"] |= {"kind": base, "bidirectional": mode == "bi"}
    if base != "transformer_xl":  # the 2-D position biases exist for transformer_xl only
        recipe["context_encoder"] |= {"distance_bias": False, "relative_range": 0}
    train_spec = recipe.pop("train")
    steps = steps or train_spec["max_steps"]
    cfg = TrainConfig.from_dict(
        {**train_spec, "max_steps": steps, "val_every": steps, "seed": seed}
    )
    config = XTConfig.from_dict(recipe)
    train_pairs = context_task_pairs(task, range(1000, 1000 + spec["scenes"]), spec)
    val_pairs = context_task_pairs(task, range(5000, 5002), spec)
    ckpt = tmp / f"{task}-{kind}-{seed}.safetensors"
    started = time.perf_counter()
    for _ in train(config, cfg, train_pairs, val_pairs, ckpt):
        pass
    seconds = time.perf_counter() - started
    options = " ".join(
        f"{s}.{k}={json.dumps(v)}" for s, kv in (overrides or {}).items() for k, v in kv.items()
    )
    row = {
        "task": task,
        "kind": kind,
        "options": options,
        "seed": seed,
        "steps": steps,
        "train_s": seconds,
    }
    return row | evaluate(ckpt, task, spec["size"], spec["region"], scenes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(CONTEXT_TASKS))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=int, help="training steps per cell (default: the recipe's max_steps)"
    )
    parser.add_argument("--eval-scenes", type=int, default=16)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override the recipe in every cell (JSON values), e.g. train.lr=1e-3",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="tabulate earlier runs only")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    rows: list[dict] = []
    if args.merge:
        for path in args.merge:
            rows += json.loads(Path(path).read_text())["rows"]
        report(rows, out)
        return
    with tempfile.TemporaryDirectory(prefix="xt-suite-") as tmp:
        for task in args.tasks:
            for kind in args.kinds:
                for seed in args.seeds:
                    rows.append(
                        run_cell(
                            task, kind, seed, args.steps, args.eval_scenes, Path(tmp), overrides
                        )
                    )
                    print(json.dumps(rows[-1]), flush=True)
                    (out / "context_suite.json").write_text(json.dumps({"rows": rows}, indent=1))
    report(rows, out)


def summarise(rows: list[dict]) -> list[dict]:
    """Rows of cells -> one row per (task, kind, options, steps): mean / std / n of the
    accuracy."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["kind"], r.get("options", ""), r["steps"]), []).append(r)
    table = []
    for (task, kind, options, steps), cells in groups.items():
        acc = np.array([c["accuracy"] for c in cells])
        table.append(
            {
                "task": task,
                "kind": kind,
                "options": options,
                "steps": steps,
                "seeds": len(cells),
                "accuracy_mean": float(acc.mean()),
                "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "accuracy_min": float(acc.min()),
                "missed": float(np.mean([c["missed"] for c in cells])),
                "train_s": float(np.mean([c["train_s"] for c in cells])),
            }
        )
    return table


def targets(table: list[dict]) -> list[dict]:
    """Per task and budget: the best context kind's mean accuracy against region-only
    (issue target: >= 0.8 and >= 0.15 above region-only). Region-only is taken at the same
    budget (its highest mean), or, where that budget has no region-only cells, at the budget
    whose region-only mean is highest (a region alone cannot tell A from B, so its accuracy is chance at any
    budget; the highest measured mean is the conservative baseline)."""
    verdicts = []
    for task, steps in dict.fromkeys((t["task"], t["steps"]) for t in table):
        cells = [t for t in table if t["task"] == task and t["steps"] == steps]
        context = [t for t in cells if t["kind"] != "none"]
        none = [t for t in cells if t["kind"] == "none"] or [
            t for t in table if t["task"] == task and t["kind"] == "none"
        ]
        if not none or not context:
            continue
        best = max(context, key=lambda t: t["accuracy_mean"])
        baseline = max(none, key=lambda t: t["accuracy_mean"])
        gain = best["accuracy_mean"] - baseline["accuracy_mean"]
        verdicts.append(
            {
                "task": task,
                "steps": steps,
                "best": label(best),
                "best_seeds": best["seeds"],
                "best_accuracy": best["accuracy_mean"],
                "best_min": best["accuracy_min"],
                "none_accuracy": baseline["accuracy_mean"],
                "none_steps": baseline["steps"],
                "gain": gain,
                "pass": bool(best["accuracy_mean"] >= 0.8 and gain >= 0.15),
            }
        )
    return verdicts


def label(t: dict) -> str:
    return f"{t['kind']} {t['options']}".strip()


def report(rows: list[dict], out: Path) -> None:
    table = summarise(rows)
    print(
        f"\n{'task':11s} {'context':20s} {'steps':>6s} {'seeds':>5s} {'accuracy':>15s} "
        f"{'missed':>7s} {'train s':>8s}  options"
    )
    for t in table:
        print(
            f"{t['task']:11s} {t['kind']:20s} {t['steps']:6d} {t['seeds']:5d} "
            f"{t['accuracy_mean']:8.3f} +- {t['accuracy_std']:.3f} {t['missed']:7.3f} "
            f"{t['train_s']:8.1f}  {t['options']}"
        )
    verdicts = targets(table)
    for v in verdicts:
        print(
            f"target {v['task']:11s} {v['steps']:5d} steps: best {v['best']} "
            f"{v['best_accuracy']:.3f} over {v['best_seeds']} seeds (>= 0.8; lowest seed "
            f"{v['best_min']:.3f}), region-only {v['none_accuracy']:.3f} "
            f"({v['none_steps']} steps), gain {v['gain']:+.3f} (>= 0.15): "
            f"{'PASS' if v['pass'] else 'FAIL'}"
        )
    (out / "context_suite.json").write_text(
        json.dumps({"rows": rows, "table": table, "targets": verdicts}, indent=1)
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    tasks = list(dict.fromkeys(t["task"] for t in table))
    budgets = len({t["steps"] for t in table}) > 1

    def bar(t: dict) -> str:  # one bar per kind, options and (when they differ) budget
        return f"{label(t)} ({t['steps']} steps)" if budgets else label(t)

    kinds = list(dict.fromkeys(bar(t) for t in table))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(kinds))
    for i, kind in enumerate(kinds):
        cells = [
            next((t for t in table if t["task"] == task and bar(t) == kind), None) for task in tasks
        ]
        x = np.arange(len(tasks)) + (i - (len(kinds) - 1) / 2) * width
        ax.bar(
            x,
            [c["accuracy_mean"] if c else 0 for c in cells],
            width,
            yerr=[c["accuracy_std"] if c else 0 for c in cells],
            label=kind,
        )
        for xi, c in zip(x, cells, strict=True):  # each seed, to show the bimodal cells
            if c is None:
                continue
            seeds = [
                r["accuracy"]
                for r in rows
                if r["task"] == c["task"] and bar({**r, "options": r.get("options", "")}) == kind
            ]
            ax.scatter([xi] * len(seeds), seeds, s=8, color="black", zorder=3)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.axhline(0.8, color="green", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylim(0, 1.22)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("context-dependent accuracy")
    ax.set_title("context task suite (mean +- std over seeds; chance 0.5, target 0.8)")
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(out / "context_suite.png", dpi=120)


if __name__ == "__main__":
    main()
