"""Parameters and CPU forward time per region of every registered model variant.

Prints a table and writes ``model_zoo.json`` and ``model_zoo.png`` to ``--out``. Each variant runs
``--regions`` regions per forward pass (one chunk, state carried from a first chunk) in
``torch.inference_mode`` with fp32, after warm-up passes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from xt_engine.models import create_model, list_models


def measure(name: str, regions: int, repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = create_model(name).eval()
    cfg = model.config
    r, c = cfg.tiling.region_size, cfg.region_encoder.in_chans
    pixels = torch.rand(1, regions, c, r, r)
    rc = torch.tensor([[i // 4, i % 4] for i in range(regions)])
    with torch.inference_mode():
        _, state = model(pixels, rc, model.init_state())  # warm-up, and a carried state
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(pixels, rc + torch.tensor([regions // 4 + 1, 0]), state)
            times.append(time.perf_counter() - start)
    backbone = sum(p.numel() for p in model.region_encoder.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {
        "name": name,
        "region_encoder": cfg.region_encoder.name,
        "context": cfg.context_encoder.kind
        + (" (bidir)" if cfg.context_encoder.bidirectional else ""),
        "task": cfg.head.task,
        "region_size": r,
        "params_m": total / 1e6,
        "backbone_params_m": backbone / 1e6,
        "ms_per_region": 1000 * min(times) / regions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pattern", default="")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = [measure(name, args.regions, args.repeats) for name in list_models(args.pattern)]
    header = (
        f"{'variant':26s} {'region encoder':26s} {'context':22s} {'R':>4s} "
        f"{'params M':>9s} {'ms/region':>10s}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['name']:26s} {row['region_encoder']:26s} {row['context']:22s} "
            f"{row['region_size']:4d} {row['params_m']:9.2f} {row['ms_per_region']:10.1f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}
    (out / "model_zoo.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (pip install 'napari-xt[bench]')")
        return
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    ax.barh([r["name"] for r in rows], [r["ms_per_region"] for r in rows], color="#3c78b4")
    ax.set_xlabel("CPU forward time per region (ms, fp32)")
    ax.set_xscale("log")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "model_zoo.png", dpi=120)
    print(f"wrote {out / 'model_zoo.json'} and {out / 'model_zoo.png'}")


if __name__ == "__main__":
    main()
