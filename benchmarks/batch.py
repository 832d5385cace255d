"""xt batch against a plain loop, and how to split the cores among workers.

``--images`` synthetic RGB TIFFs of ``--side`` px through ``--model`` (default: the tiny
untrained ``test_convnext_none``, 64 px regions), on the CPU:

* ``serial``: a fresh process (not this one, which hosts the clusters' schedulers), torch at
  ``--threads`` threads, warmed up on one image (the workers are warm after the first round),
  then timed inside that process: the model loaded, ``run_inference`` image after image into
  stores;
* ``batch 1xT``: :func:`xt_engine.batch.run_batch` on a LocalCluster of one worker process with
  ``--threads`` threads (the same work, through dask: the overhead);
* ``--splits`` as WORKERSxTHREADS (default ``2x1`` and ``1x2``): images/hour.

Each cluster starts once (``start_s``, reported apart: a fixed cost per batch, not per image);
a batch is timed from the ready cluster to its last result, model loading on the workers
included as the serial loop's is. ``--repeats`` rounds, each running every configuration in
turn; ``run_s`` is each configuration's best round, ``vs serial`` the median over the rounds
of its time / that round's serial time (pairs taken close together: a shared machine's load
drifts). Target: ``batch 1xT`` within 5% of ``serial``. Prints a table and writes
``batch.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from distributed import Client

from xt_engine import run_inference
from xt_engine.batch import collect_inputs, new_run_id, run_batch
from xt_engine.batch.cluster import local_cluster, machine_cores
from xt_engine.batch.worker import RunOptions
from xt_engine.weights.loading import load_model


def make_images(folder: Path, count: int, side: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"image{i:03d}.tif"
        tifffile.imwrite(path, rng.integers(0, 255, (side, side, 3), np.uint8), tile=(256, 256))
        paths.append(path)
    return paths


def serial(images: list[Path], model_name: str, out: Path, batch_size: int) -> float:
    start = time.perf_counter()
    model = load_model(model_name, allow_untrained=True)
    for path in images:
        for _ in run_inference(
            str(path), model, output=out / f"{path.stem}.zarr", batch_size=batch_size
        ):
            pass
    return time.perf_counter() - start


def serial_elsewhere(folder: Path, out: Path, args: argparse.Namespace) -> float:
    """:func:`serial` in a fresh process; its own timing."""
    command = [sys.executable, __file__, "--serial-run", str(folder), str(out)]
    command += ["--model", args.model, "--batch-size", str(args.batch_size)]
    command += ["--threads", str(args.threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def batch(images: list[Path], model_name: str, out: Path, client: Any, batch_size: int) -> float:
    start = time.perf_counter()
    tasks = collect_inputs([str(images[0].parent)], out)
    options = RunOptions(
        model_name,
        str(out),
        new_run_id(),
        allow_untrained=True,
        batch_size=batch_size,
        device="cpu",
    )
    results = run_batch(tasks, options, client, resources={"image": 1})
    assert all(r.status == "done" for r in results), [r.error for r in results]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--model", default="test_convnext_none")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="serial and batch 1xT threads")
    parser.add_argument("--splits", nargs="*", default=["2x1", "1x2"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--serial-run", nargs=2, metavar=("IMAGES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serial_run:  # the serial loop's own process: print its seconds
        torch.set_num_threads(args.threads)
        folder, out = (Path(v) for v in args.serial_run)
        images = sorted(folder.glob("*.tif"))
        serial(images[:1], args.model, out / "warm-up", args.batch_size)  # as warm as a worker
        print(serial(images, args.model, out, args.batch_size))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    cores = machine_cores()
    torch.set_num_threads(args.threads)
    splits = [f"1x{args.threads}", *[s for s in args.splits if s != f"1x{args.threads}"]]
    best: dict[str, float] = {}
    ratios: dict[str, list[float]] = {}
    starts: dict[str, float] = {"serial": 0.0}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp) / "images"
        folder.mkdir()
        images = make_images(folder, args.images, args.side)
        clients = {}
        for split in splits:
            workers, threads = (int(v) for v in split.split("x"))
            began = time.perf_counter()
            cluster = stack.enter_context(
                local_cluster(workers, threads, use_gpus=False, dashboard_address=None)
            )
            clients[split] = stack.enter_context(Client(cluster))
            clients[split].wait_for_workers(workers)
            starts[f"batch {split}"] = time.perf_counter() - began
        for repeat in range(args.repeats):
            out = Path(tmp) / f"serial-{repeat}"
            times = {"serial": serial_elsewhere(folder, out, args)}
            for split, client in clients.items():
                out = Path(tmp) / f"batch-{split}-{repeat}"
                times[f"batch {split}"] = batch(images, args.model, out, client, args.batch_size)
            for run, seconds in times.items():
                best[run] = min(best.get(run, float("inf")), seconds)
                ratios.setdefault(run, []).append(seconds / times["serial"])
            shutil.rmtree(Path(tmp) / f"serial-{repeat}", ignore_errors=True)
    rows = [
        {"run": run, "start_s": starts[run], "run_s": seconds, "done": args.images}
        for run, seconds in best.items()
    ]
    for row in rows:
        row["images_per_hour"] = 3600.0 * row["done"] / row["run_s"]
        row["overhead"] = float(np.median(ratios[row["run"]])) - 1.0
        row["ratios"] = ratios[row["run"]]
    print(
        f"{args.images} images of {args.side}^2 px, {args.model}, {cores} cores, "
        f"{args.repeats} rounds"
    )
    print(f"{'run':12s} {'start s':>8s} {'run s':>8s} {'images/h':>9s} {'vs serial':>9s}")
    for row in rows:
        print(
            f"{row['run']:12s} {row['start_s']:8.1f} {row['run_s']:8.1f} "
            f"{row['images_per_hour']:9.0f} {100 * row['overhead']:+8.1f}%"
        )
    summary = {
        "images": args.images,
        "side": args.side,
        "model": args.model,
        "cores": cores,
        "threads": args.threads,
        "repeats": args.repeats,
        "rows": rows,
    }
    (args.out / "batch.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
