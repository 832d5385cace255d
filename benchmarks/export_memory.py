"""Export memory does not grow with the slide: peak RSS of `xt export` to GeoJSON and GeoTIFF
for a 32k x 32k result store against a 4k x 4k one (target: within 1.25x).

The stores are written directly (no inference): a label image of blobs of 3 classes (a 4k x 4k
pattern tiled over the image, ~60 polygons per 4k tile, some crossing tile borders), 256 px
tiles, with a georeference so both formats apply. Each export runs in its own process; its
peak RSS is the kernel's ``VmHWM``. Prints a table, writes ``export_memory.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from xt_engine.io import ImageSource
from xt_engine.io.source import Georeference
from xt_engine.models import model_config
from xt_engine.store.result_store import OutputStore
from xt_engine.tiling import RegionGrid

TILE = 256
PATTERN = 4096


def pattern() -> np.ndarray:
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.random((PATTERN // 16, PATTERN // 16)), 3)
    field = np.kron(field, np.ones((16, 16)))
    labels = np.zeros((PATTERN, PATTERN), np.uint8)
    labels[field > np.quantile(field, 0.8)] = 1
    labels[field < np.quantile(field, 0.1)] = 2
    return labels


def make_store(path: Path, side: int) -> None:
    config = model_config("test_convnext_none")
    config.tiling.region_size = TILE
    source = ImageSource(
        [np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (side, side), (0, 0))],
        "yx",
        pixel_size=(10.0, 10.0),
        unit="meter",
        georeference=Georeference((10.0, 0, 400000.0, 0, -10.0, 5000000.0), None, 32633),
        name=f"synthetic-{side}",
    )
    grid = RegionGrid.for_image((side, side), TILE)
    store = OutputStore.create(path, source=source, level=0, grid=grid, config=config)
    tile = pattern()
    for row in range(grid.rows):
        items = []
        for col in range(grid.cols):
            r = grid.region(row * grid.cols + col)
            ty, tx = r.y0 % PATTERN, r.x0 % PATTERN
            items.append((r, tile[ty : ty + r.height, tx : tx + r.width], None, None, None))
        store.write_batch(items)
    store.mark_complete()


def export_peak(store: Path, to: str, out: Path) -> tuple[float, float]:
    code = (
        "import sys, time\n"
        "from xt_engine.export import export_store\n"
        "from xt_engine.runtime.inference import peak_rss_mb\n"
        "t = time.perf_counter()\n"
        f"export_store({str(store)!r}, {to!r}, {str(out)!r}, overwrite=True)\n"
        "print(peak_rss_mb(), time.perf_counter() - t)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, seconds = done.stdout.split()
    return float(peak), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--small", type=int, default=4096)
    parser.add_argument("--large", type=int, default=32768)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for side in (args.small, args.large):
            store = Path(tmp) / f"s{side}.zarr"
            start = time.perf_counter()
            make_store(store, side)
            print(f"store {side}^2 written in {time.perf_counter() - start:.0f} s", flush=True)
            for to, suffix in (("geojson", ".geojson"), ("geotiff", ".tif")):
                target = Path(tmp) / f"s{side}{suffix}"
                peak, seconds = export_peak(store, to, target)
                rows[f"{to} {side}"] = {
                    "peak_rss_mb": round(peak, 1),
                    "seconds": round(seconds, 2),
                    "size_mb": round(target.stat().st_size / 2**20, 2),
                }
    print(f"{'export':16s} {'peak RSS MB':>12s} {'seconds':>8s} {'file MB':>8s}")
    for name, r in rows.items():
        print(f"{name:16s} {r['peak_rss_mb']:12.1f} {r['seconds']:8.2f} {r['size_mb']:8.2f}")
    print(f"{'ratio (target <= 1.25)':26s} {'pass':>5s}")
    summary = {}
    for to in ("geojson", "geotiff"):
        ratio = rows[f"{to} {args.large}"]["peak_rss_mb"] / rows[f"{to} {args.small}"]["peak_rss_mb"]
        summary[to] = {"ratio": round(ratio, 3), "pass": ratio <= 1.25}
        print(f"{to + ' large/small':26s} {ratio:5.3f} {str(ratio <= 1.25):>5s}")
    (out / "export_memory.json").write_text(json.dumps({"rows": rows, "ratio": summary}, indent=2))


if __name__ == "__main__":
    main()
