"""Where streaming throughput goes, step by step, in one process (regions/s).

A registered model (default ``xt_convnext_atto_none``) on 1-channel 256 px regions, batch 8, CPU:
the region encoder alone and the whole model on in-memory batches (the two ceilings), then
``run_inference`` from a numpy array without an output store, from a tiled deflate TIFF without
and with the OME-Zarr store. Each rate is also given as a fraction of both ceilings. With a tiny
backbone (convnext_atto) the segmentation head alone costs about a quarter of the compute, so
``--model xt_convnext_tiny_none``-like heavier backbones show the pipeline's own overhead.
Prints a table and writes ``throughput_breakdown[_MODEL].json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch

from context_suite import parse_overrides  # benchmarks/ is on sys.path when run as a script
from xt_engine import Finished, create_model, run_inference
from xt_engine.models import model_config
from xt_engine.models.heads import segmentation_labels


def rate(step: Callable[[], object], batch: int, seconds: float = 8.0) -> float:
    step()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--model", default="xt_convnext_atto_none", help="a registered model")
    parser.add_argument("--seconds", type=float, default=8.0, help="per in-memory ceiling")
    parser.add_argument(
        "--head",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="head config overrides (JSON values), e.g. decoder_dim=16 (the light head)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    config = model_config(args.model)
    config.region_encoder.in_chans = 1
    for key, value in (
        parse_overrides([f"head.{item}" for item in args.head]).get("head", {}).items()
    ):
        setattr(config.head, key, value)
    model = create_model(config).eval()
    r, batch = model.region_size, args.batch_size
    x = torch.rand(1, batch, 1, r, r)
    rc = torch.tensor([[0, i] for i in range(batch)])

    def whole_model() -> None:
        out, _ = model(x, rc, model.init_state(1))
        assert out.logits is not None
        segmentation_labels(out.logits).numpy()

    rows = {}
    with torch.inference_mode():
        rows["region encoder alone (in memory)"] = rate(
            lambda: model.region_encoder(model.normalize(x[0])), batch, args.seconds
        )
        rows["whole model (in memory)"] = rate(whole_model, batch, args.seconds)
    image = np.random.default_rng(0).integers(0, 256, (args.side, args.side), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="xt-breakdown-") as tmp:
        path = Path(tmp) / "scene.tif"
        tifffile.imwrite(path, image, tile=(256, 256), compression="zlib")

        def run(source: object, output: Path | None = None) -> float:
            for event in run_inference(source, model, output=output, batch_size=batch):
                if isinstance(event, Finished):
                    return event.done / event.seconds
            return float("nan")

        rows["run_inference, numpy, no store"] = run(image)
        rows["run_inference, TIFF, no store"] = run(str(path))
        rows["run_inference, TIFF, OME-Zarr store"] = run(str(path), Path(tmp) / "out.zarr")
    model_rate = rows["whole model (in memory)"]
    encoder_rate = rows["region encoder alone (in memory)"]
    head = " ".join(args.head)
    print(f"{args.model} {head}, {r} px regions, batch {batch}, {args.side}^2 image")
    print(f"{'step':40s} {'regions/s':>10s} {'/ encoder':>10s} {'/ model':>8s}")
    for name, value in rows.items():
        print(f"{name:40s} {value:10.1f} {value / encoder_rate:10.2f} {value / model_rate:8.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.model == "xt_convnext_atto_none" else f"_{args.model}"
    suffix += "".join(f"_{item.replace('=', '')}" for item in args.head)
    record = {"model": args.model, "head": head, "side": args.side, "regions_per_s": rows}
    (out / f"throughput_breakdown{suffix}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
