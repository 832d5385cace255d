"""Peak memory against image size, and throughput against the backbone's own compute rate.

For each image side (default 2048, 4096, 8192, 16384) a tiled, deflate-compressed grayscale TIFF
is written lazily (tile by tile, never whole in memory) and, each in a fresh process:

- ``xt``: ``run_inference`` over the whole file, writing an OME-Zarr result (peak RSS, regions/s);
- ``naive``: the region encoder run on the whole image at once (only up to ``--naive-max``);
- ``monai``: MONAI's ``sliding_window_inference`` with the same model per window, which needs
  the whole image in memory as a tensor (only up to ``--monai-max``; skipped without MONAI);
  timed like ``xt`` from the file (reading the image, windows, labels in memory; it writes no
  store, and its windows carry no context state);

plus, before and after the rows, two ceilings on in-memory batches of random regions (regions/s,
the ratios use the mean of both measurements): the region
encoder alone (``backbone``), and the whole model as xt runs it (region encoder, context, head,
first best class as uint8 labels: ``model``). ``xt / model`` is the pipeline's efficiency (what reading,
decoding, writing and threading cost); ``xt / backbone`` also counts the head. With CUDA, each
size also runs ``xt`` on the GPU (bf16 autocast, ``--gpu-batch-size``): regions/s, peak GPU
memory and the GPU's busy fraction (xt's rate over the whole model's in-memory GPU rate). Prints
tables and writes ``streaming.json`` (and ``streaming.png`` with matplotlib) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

CHILD = r"""
import json, sys, time
import numpy as np, torch
from xt_engine import create_model, run_inference, Finished
from xt_engine.runtime.inference import peak_rss_mb
from xt_engine.io import open_image
from xt_engine.models import model_config
from xt_engine.models.heads import segmentation_labels
mode, path, model_name, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
device = torch.device(sys.argv[5] if len(sys.argv) > 5 else "cpu")
cuda = device.type == "cuda"
torch.manual_seed(0)
config = model_config(model_name)
config.region_encoder.in_chans = 1  # the benchmark scenes are grayscale
model = create_model(config).eval().to(device)
r = model.region_size
rss = peak_rss_mb
def gpu_mb():
    return torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
if mode == "ceiling":
    x = torch.rand(1, batch, model.config.region_encoder.in_chans, r, r, device=device)
    rc = torch.tensor([[0, i] for i in range(batch)], device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    def rate(step):
        step(); t = time.perf_counter(); n = 0
        while time.perf_counter() - t < 10:
            step(); n += batch
        if cuda:
            torch.cuda.synchronize(device)
        return n / (time.perf_counter() - t)
    def whole():
        out, _ = model(x, rc, model.init_state(1, device))
        segmentation_labels(out.logits).cpu().numpy()  # the labels reach the host, as in xt
    with torch.inference_mode(), amp:
        backbone = rate(lambda: model.region_encoder(model.normalize(x[0])))
        full = rate(whole)
    print(json.dumps({"regions_per_s": backbone, "model_regions_per_s": full,
                      "peak_rss_mb": rss(), "gpu_peak_mb": gpu_mb()}))
elif mode == "xt":
    out = path + ".result.zarr"
    for event in run_inference(path, model, output=out, batch_size=batch, device=device):
        if isinstance(event, Finished):
            print(json.dumps({"regions_per_s": event.done / event.seconds, "regions": event.done,
                              "seconds": event.seconds, "peak_rss_mb": rss(),
                              "gpu_peak_mb": gpu_mb()}))
elif mode == "monai":
    from monai.inferers import sliding_window_inference
    t = time.perf_counter()  # like xt's, from the file: reading the whole image is its first step
    source = open_image(path)
    h, w = source.shape_yx(0)
    image = torch.from_numpy(source.read(0, 0, 0, h, w).astype(np.float32) / 255.0)[None]
    state = model.init_state(1)
    def predictor(x):  # the same per-region computation as xt (no context kind)
        out, _ = model(x[None], torch.zeros(x.shape[0], 2, dtype=torch.long), state)
        return out.logits
    with torch.inference_mode():
        logits = sliding_window_inference(image, (r, r), batch, predictor, overlap=0.0)
        labels = segmentation_labels(logits)
    seconds = time.perf_counter() - t
    print(json.dumps({"regions_per_s": (h // r) * (w // r) / seconds, "seconds": seconds,
                      "peak_rss_mb": rss()}))
else:
    source = open_image(path)
    h, w = source.shape_yx(0)
    image = torch.from_numpy(source.read(0, 0, 0, h, w).astype(np.float32) / 255.0)[None]
    t = time.perf_counter()
    with torch.inference_mode():
        model.region_encoder(model.normalize(image))
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": rss()}))
"""


def write_tiled(path: Path, side: int, tile: int = 256) -> None:
    rng = np.random.default_rng(side)

    def tiles():
        for _ in range((side // tile) ** 2):
            yield rng.integers(0, 256, (tile, tile), dtype=np.uint8)

    tifffile.imwrite(
        path,
        tiles(),
        shape=(side, side),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="zlib",
        bigtiff=side > 16384,
    )


def child(mode: str, path: str, model: str, batch: int, device: str = "cpu") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, path, model, str(batch), device],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _has_monai() -> bool:
    import importlib.util

    return importlib.util.find_spec("monai") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    parser.add_argument("--model", default="xt_convnext_atto_none")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--naive-max", type=int, default=8192)
    parser.add_argument("--monai-max", type=int, default=16384)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument(
        "--gpu-batch-size", type=int, default=32, help="with CUDA: GPU rows too (0: none)"
    )
    args = parser.parse_args()
    if not _has_cuda():
        args.gpu_batch_size = 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    ceiling = child("ceiling", "-", args.model, args.batch_size)
    gpu_ceiling = (
        child("ceiling", "-", args.model, args.gpu_batch_size, "cuda")
        if args.gpu_batch_size
        else None
    )
    with tempfile.TemporaryDirectory(prefix="xt-bench-") as tmp:
        for side in args.sizes:
            path = Path(tmp) / f"scene_{side}.tif"
            write_tiled(path, side)
            row = {"side": side, "xt": child("xt", str(path), args.model, args.batch_size)}
            if side <= args.naive_max:
                row["naive"] = child("naive", str(path), args.model, args.batch_size)
            if side <= args.monai_max and _has_monai():
                row["monai"] = child("monai", str(path), args.model, args.batch_size)
            rows.append(row)
            if args.gpu_batch_size:
                row["xt_gpu"] = child("xt", str(path), args.model, args.gpu_batch_size, "cuda")
            print(f"{side:6d}  xt {row['xt']}  naive {row.get('naive')}", flush=True)
    # the ceilings drift run to run on a shared machine (+-10%): measured before and after the
    # rows, the ratios use their mean
    after = child("ceiling", "-", args.model, args.batch_size)
    ceiling = {
        "before": ceiling,
        "after": after,
        **{k: (ceiling[k] + after[k]) / 2 for k in ("regions_per_s", "model_regions_per_s")},
    }
    print(
        f"\nmodel {args.model}; ceilings: backbone {ceiling['regions_per_s']:.1f}, whole model "
        f"{ceiling['model_regions_per_s']:.1f} regions/s"
    )
    print(
        f"{'side':>6s} {'xt RSS MiB':>11s} {'xt regions/s':>13s} {'/model':>7s} {'/backbone':>10s} "
        f"{'naive RSS MiB':>14s} {'monai RSS MiB':>14s} {'monai regions/s':>16s}"
    )
    nan = float("nan")
    for row in rows:
        xt, naive, monai = row["xt"], row.get("naive", {}), row.get("monai", {})
        ratio = xt.get("regions_per_s", 0) / ceiling["regions_per_s"]
        ratio_model = xt.get("regions_per_s", 0) / ceiling["model_regions_per_s"]
        row["ratio_to_ceiling"] = ratio
        row["ratio_to_model"] = ratio_model
        print(
            f"{row['side']:6d} {xt.get('peak_rss_mb', nan):11.0f} "
            f"{xt.get('regions_per_s', nan):13.1f} {ratio_model:7.2f} {ratio:10.2f} "
            f"{naive.get('peak_rss_mb', nan):14.0f} {monai.get('peak_rss_mb', nan):14.0f} "
            f"{monai.get('regions_per_s', nan):16.1f}"
        )
    if gpu_ceiling is not None:
        _gpu_table(rows, gpu_ceiling, args.gpu_batch_size)
    (out / "streaming.json").write_text(
        json.dumps(
            {"model": args.model, "ceiling": ceiling, "gpu_ceiling": gpu_ceiling, "rows": rows},
            indent=2,
        )
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    sides = [r["side"] for r in rows]
    ax.plot(sides, [r["xt"].get("peak_rss_mb") for r in rows], "o-", label="xt (streaming)")
    for key, style, label in (
        ("naive", "s--", "naive full-image forward"),
        ("monai", "^:", "MONAI sliding window"),
    ):
        points = [(r["side"], r[key].get("peak_rss_mb")) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("image side (px)")
    ax.set_ylabel("peak RSS (MiB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "streaming.png", dpi=120)


def _gpu_table(rows: list[dict], ceiling: dict, batch: int) -> None:
    """GPU figures: regions/s, GPU memory, and the GPU's busy fraction, estimated as xt's rate
    over the whole model's in-memory rate on the GPU (the time the model would need alone
    divided by the time the run took)."""
    print(
        f"\nGPU (bf16 autocast, batch {batch}); ceilings: backbone "
        f"{ceiling.get('regions_per_s', float('nan')):.1f}, whole model "
        f"{ceiling.get('model_regions_per_s', float('nan')):.1f} regions/s"
    )
    print(f"{'side':>6s} {'regions/s':>10s} {'GPU MiB':>8s} {'busy':>6s} {'RSS MiB':>8s}")
    for row in rows:
        gpu = row["xt_gpu"]
        busy = gpu.get("regions_per_s", 0) / ceiling.get("model_regions_per_s", float("nan"))
        row["gpu_busy_fraction"] = busy
        print(
            f"{row['side']:6d} {gpu.get('regions_per_s', float('nan')):10.1f} "
            f"{gpu.get('gpu_peak_mb') or float('nan'):8.0f} {busy:6.2f} "
            f"{gpu.get('peak_rss_mb', float('nan')):8.0f}"
        )


if __name__ == "__main__":
    main()
