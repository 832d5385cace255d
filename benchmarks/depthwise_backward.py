"""The depthwise convolutions' CPU backward: torch's own against :mod:`xt_engine.models.depthwise`.

1. Per shape (7 x 7 depthwise, the region encoders' training shapes), one process: forward,
   torch's backward and the fast backward, ms (best of ``--repeats``), and the largest gradient
   difference relative to the gradient's scale.
2. Training steps of the context suite recipe (``--task``, bidirectional Transformer-XL,
   ``--steps`` steps from one seed), torch's backward (the region encoder's convolutions left as
   ``nn.Conv2d``) and the fast one alternated, ``--repeats`` rounds: seconds a step and the last
   logged loss of each.

Prints both tables and writes ``depthwise_backward.json`` to ``--out``. Needs a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import xt_engine.models.region_encoder as region_encoder
from xt_engine import XTConfig
from xt_engine.models.depthwise import use_fast_depthwise_backward
from xt_engine.train.config import TrainConfig
from xt_engine.train.recipes import context_task_pairs, context_task_recipe
from xt_engine.train.trainer import train

SHAPES = [(128, 48, 4, 4), (128, 24, 8, 8), (16, 24, 32, 32), (16, 96, 8, 8), (2, 24, 128, 128)]


def best_ms(step, repeats: int, inner: int = 10) -> float:  # type: ignore[no-untyped-def]
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - start) / inner * 1e3)
    return min(times)


def op_row(shape: tuple[int, int, int, int], repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    reference = nn.Conv2d(shape[1], shape[1], 7, padding=3, groups=shape[1])
    fast = copy.deepcopy(reference)
    use_fast_depthwise_backward(fast)
    x = torch.randn(shape)
    grad = torch.randn(shape)
    row: dict[str, float] = {}
    with torch.no_grad():
        row["forward_ms"] = best_ms(lambda: reference(x), repeats)
    grads = {}
    for name, conv in (("torch", reference), ("fast", fast)):
        xi = x.clone().requires_grad_()

        def step(conv: nn.Module = conv, xi: torch.Tensor = xi) -> None:
            xi.grad = None
            conv.zero_grad(set_to_none=True)
            conv(xi).backward(grad)

        row[f"{name}_forward_backward_ms"] = best_ms(step, repeats)
        grads[name] = [xi.grad, conv.weight.grad, conv.bias.grad]
    row["max_rel_diff"] = max(
        ((a - b).abs().max() / a.abs().max()).item()
        for a, b in zip(grads["torch"], grads["fast"], strict=True)
    )
    return row


def train_seconds(task: str, steps: int, fast: bool) -> tuple[float, float]:
    """(seconds a step, last logged loss) of ``steps`` suite-recipe steps."""
    recipe = copy.deepcopy(context_task_recipe(task))
    spec = recipe.pop("data")
    train_spec = recipe.pop("train")
    cfg = TrainConfig.from_dict({**train_spec, "max_steps": steps, "val_every": steps, "seed": 0})
    config = XTConfig.from_dict(recipe)
    pairs = context_task_pairs(task, range(1000, 1000 + spec["scenes"]), spec)
    val = context_task_pairs(task, range(5000, 5001), spec)
    switch = region_encoder.use_fast_depthwise_backward
    if not fast:
        region_encoder.use_fast_depthwise_backward = lambda root: 0  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stamps, loss = [], float("nan")
            for event in train(config, cfg, pairs, val, Path(tmp) / "m.safetensors"):
                stamps.append(time.perf_counter())
                loss = event.loss
            # steps 2 .. n-1: neither the first step's warm-up nor the last one's validation
            return (stamps[-2] - stamps[0]) / (len(stamps) - 2), loss
    finally:
        region_encoder.use_fast_depthwise_backward = switch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task", default="count")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ops = {str(shape): op_row(shape, args.repeats) for shape in SHAPES}
    print(
        f"{'shape':20s} {'fwd ms':>8s} {'torch f+b':>10s} {'fast f+b':>9s} {'x':>6s} {'rel diff':>9s}"
    )
    for shape, row in ops.items():
        t, f = row["torch_forward_backward_ms"], row["fast_forward_backward_ms"]
        print(
            f"{shape:20s} {row['forward_ms']:8.2f} {t:10.2f} {f:9.2f} {t / f:6.1f} {row['max_rel_diff']:9.1e}"
        )
    steps: dict[str, list[list[float]]] = {"torch": [], "fast": []}
    for round_ in range(args.repeats):
        order = ("torch", "fast") if round_ % 2 == 0 else ("fast", "torch")
        for name in order:
            steps[name].append(list(train_seconds(args.task, args.steps, name == "fast")))
    print(f"\nsuite recipe ({args.task}, {args.steps} steps), s a step (last loss):")
    for name, runs in steps.items():
        print(f"  {name:6s} " + "  ".join(f"{s:.3f} ({loss:.4f})" for s, loss in runs))
    best = {name: min(s for s, _ in runs) for name, runs in steps.items()}
    print(
        f"  best: torch {best['torch']:.3f}, fast {best['fast']:.3f}: {best['torch'] / best['fast']:.2f}x"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"threads": torch.get_num_threads(), "ops": ops, "train": steps, "args": vars(args)}
    (out / "depthwise_backward.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
