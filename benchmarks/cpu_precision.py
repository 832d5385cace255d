"""CPU options against eager fp32: bf16 autocast (AVX512-BF16 / AMX), channels-last, int8
dynamic quantisation of the linear layers, ``torch.compile`` (inductor) of the region encoder,
input projection and head (timed after one warm-up pass over the scene, which holds the
compilation); throughput and label agreement with fp32.

Each model (``--models``, default: the bundled demo model; untrained architectures may be
named for speed only) runs over a synthetic SAR scene (``--side`` px) in one process, options alternated,
best of ``--repeats``. Agreement: the share of label pixels equal to the fp32 run (meaningful
for the trained demo model; the untrained rows are speed only). Prints a table and writes
``cpu_precision.json`` to ``--out``. Needs an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xt_engine import RegionDone, run_inference
from xt_engine.synthetic import make_sar_scene
from xt_engine.weights.loading import load_model

OPTIONS = ("fp32", "bf16", "channels_last", "int8_linear", "compile")
COMPILED = ("region_encoder", "input_proj", "head")  # the context encoder carries state


def prepare(name: str, option: str) -> tuple[torch.nn.Module, str]:
    model = load_model(name, allow_untrained=True).eval()
    precision = "bf16" if option == "bf16" else "fp32"
    if option == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    if option == "int8_linear":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if option == "compile":
        for part in COMPILED:
            setattr(model, part, torch.compile(getattr(model, part), dynamic=False))
    return model, precision


def run(model: torch.nn.Module, image: np.ndarray, precision: str) -> tuple[float, np.ndarray]:
    labels = np.zeros(image.shape[-2:], np.uint8)
    start = time.perf_counter()
    count = 0
    for event in run_inference(image, model, batch_size=8, precision=precision, foreground="none"):
        if isinstance(event, RegionDone) and event.labels is not None:
            r = event.region
            labels[r.y0 : r.y0 + r.height, r.x0 : r.x0 + r.width] = event.labels
            count += 1
    return count / (time.perf_counter() - start), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["xt_demo_sar"])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = make_sar_scene((args.side, args.side), seed=3)[0]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.models:
        channels = load_model(name, allow_untrained=True).config.region_encoder.in_chans
        image = scene if channels == 1 else np.repeat(scene[..., None], channels, axis=-1)
        rows: dict[str, dict[str, float]] = {}
        reference = None
        for repeat in range(args.repeats):
            for option in OPTIONS if repeat % 2 == 0 else OPTIONS[::-1]:
                try:
                    model, precision = prepare(name, option)
                    if option == "compile":
                        run(model, image, precision)  # warm-up: compiles every batch shape
                    rate, labels = run(model, image, precision)
                except Exception as err:  # noqa: BLE001 - an option a backbone cannot take
                    rows[option] = {"error": str(err)[:80]}  # type: ignore[dict-item]
                    continue
                if option == "fp32" and reference is None:
                    reference = labels
                entry = rows.setdefault(option, {"regions_per_s": 0.0})
                entry["regions_per_s"] = max(entry["regions_per_s"], round(rate, 2))
                if reference is not None:
                    entry["agreement"] = round(float((labels == reference).mean()), 5)
        table[name] = rows
        base = rows["fp32"]["regions_per_s"]
        print(f"\n{name}: {'option':14s} {'regions/s':>10s} {'x fp32':>7s} {'agree':>7s}")
        for option, entry in rows.items():
            if "error" in entry:
                print(f"{'':{len(name) + 2}s}{option:14s} error: {entry['error']}")
                continue
            speed = entry["regions_per_s"] / base
            agree = entry.get("agreement", float("nan"))
            print(
                f"{'':{len(name) + 2}s}{option:14s} {entry['regions_per_s']:10.1f} "
                f"{speed:7.2f} {agree:7.4f}"
            )
    (out / "cpu_precision.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
