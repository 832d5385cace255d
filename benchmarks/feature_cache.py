"""Two-pass runs with and without the feature cache (`xt infer --feature-cache-mib`).

A bidirectional model runs its region encoder in both passes; the cache keeps pass 1's
features of the image's first regions for pass 2 (``xt_engine.runtime.feature_cache``). The
bundled demo model (bidirectional Transformer-XL, 128 px regions) on synthetic SAR scenes of
each ``--sides`` px, written as tiled TIFFs, each run a fresh `xt infer` process (fp32, CPU,
batch 8), budgets 0 (no cache) and the default alternated, best of ``--repeats``. Reports
regions/s, the speed-up, peak RSS (the child's ``ru_maxrss``) and whether the labels of both
budgets are equal (they must be). Prints a table and writes ``feature_cache.json`` to
``--out``. Needs an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import zarr

# runs `xt infer ARGS` in a child and prints the child's peak RSS (MiB) last
MEASURED = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run([sys.executable, '-m', 'xt_engine.cli', 'infer', *sys.argv[1:]],"
    " capture_output=True, text=True)\n"
    "print(done.stdout); print(done.stderr, file=sys.stderr)\n"
    "print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    "sys.exit(done.returncode)\n"
)


def run_xt(image: Path, out: Path, budget: int) -> tuple[float, float]:
    """(regions/s, peak RSS MiB) of one `xt infer` run."""
    args = [
        str(image),
        "--model",
        "xt_demo_sar",
        "--out",
        str(out),
        "--overwrite",
        "--batch-size",
        "8",
        "--feature-cache-mib",
        str(budget),
    ]
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *args], capture_output=True, text=True, check=True
    )
    rate = re.search(r"\(([0-9.]+) regions/s\)", done.stdout)
    peak = re.search(r"^peak ([0-9.]+)$", done.stdout, re.MULTILINE)
    assert rate and peak, done.stdout
    return float(rate.group(1)), float(peak.group(1))


def labels(store: Path) -> np.ndarray:
    from xt_engine.store.result_store import LABELS_PATH

    return np.asarray(zarr.open_group(str(store), mode="r")[f"{LABELS_PATH}/0"][:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--sides", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import tifffile

    from xt_engine.runtime.feature_cache import DEFAULT_FEATURE_CACHE_MIB
    from xt_engine.synthetic import make_sar_scene

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = (0, DEFAULT_FEATURE_CACHE_MIB)
    rows = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for side in args.sides:
            image = Path(tmp) / f"scene{side}.tif"
            tifffile.imwrite(image, make_sar_scene((side, side), seed=5)[0], tile=(512, 512))
            best: dict[int, tuple[float, float]] = {}
            for repeat in range(args.repeats):
                for budget in budgets if repeat % 2 == 0 else budgets[::-1]:
                    rate, peak = run_xt(image, Path(tmp) / f"out{budget}.zarr", budget)
                    old = best.get(budget, (0.0, 0.0))
                    best[budget] = (max(old[0], rate), max(old[1], peak))
            equal = bool(
                np.array_equal(
                    labels(Path(tmp) / "out0.zarr"), labels(Path(tmp) / f"out{budgets[1]}.zarr")
                )
            )
            rows.append(
                {
                    "side": side,
                    "regions": (side // 128) ** 2,
                    "no_cache": {"regions_per_s": best[0][0], "peak_rss_mb": best[0][1]},
                    "cache": {
                        "mib": budgets[1],
                        "regions_per_s": best[budgets[1]][0],
                        "peak_rss_mb": best[budgets[1]][1],
                    },
                    "speedup": best[budgets[1]][0] / best[0][0],
                    "labels_equal": equal,
                }
            )
    print(
        f"{'side':>6s} {'regions':>8s} {'no cache r/s':>13s} {'RSS MiB':>8s} "
        f"{'cache r/s':>10s} {'RSS MiB':>8s} {'speed-up':>9s} {'labels equal':>13s}"
    )
    for r in rows:
        print(
            f"{r['side']:6d} {r['regions']:8d} {r['no_cache']['regions_per_s']:13.1f} "
            f"{r['no_cache']['peak_rss_mb']:8.0f} {r['cache']['regions_per_s']:10.1f} "
            f"{r['cache']['peak_rss_mb']:8.0f} {r['speedup']:9.2f} {str(r['labels_equal']):>13s}"
        )
    (out / "feature_cache.json").write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
