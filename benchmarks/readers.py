"""Region read throughput of the image readers, per storage format.

Writes one ``--size`` x ``--size`` RGB uint8 image (smooth random content plus light noise) to a
temporary folder as: tiled TIFF (uncompressed / deflate / JPEG / zstd), a stripped uncompressed
TIFF (memory-mapped by the reader), OME-Zarr v3 (zarr's default codec, chunks (1, T, T)) and a
DICOM WSI series written by wsidicom (uncompressed and JPEG frames of T x T, read by
:mod:`xt_engine.io.dicom_reader`).
Then reads every ``--region`` x ``--region`` box in raster order through
``open_image(path).read_padded`` and reports regions/s decoded. For the tiled TIFFs the same
boxes are also read through OpenSlide (:mod:`xt_engine.io.openslide_reader`: the file as
``generic-tiff``, one ``read_region`` per box; the reader ``open_image`` picks for vendor
formats tifffile does not read) and through dask (``tifffile.imread(path, aszarr=True)`` ->
``dask.array.from_zarr``, one ``np.asarray`` per box) for comparison.

Prints a table and writes ``readers.json`` (and ``readers.png`` when matplotlib imports) to
``--out``. Runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from xt_engine.io import open_image
from xt_engine.io.dicom_writer import write_dicom_wsi


def smooth_rgb(size: int, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8: a bilinearly upsampled coarse random grid plus +-4 noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((3, 33, 33), dtype=np.float32) * 230 + 10
    pos = np.linspace(0, 32, size, dtype=np.float32)  # bilinear weights as a (size, 33) matrix
    weights = np.maximum(0, 1 - np.abs(pos[:, None] - np.arange(33, dtype=np.float32)))
    out = np.empty((size, size, 3), np.uint8)
    for c in range(3):
        plane = weights @ coarse[c] @ weights.T
        plane += rng.integers(-4, 5, plane.shape, dtype=np.int8)
        out[..., c] = np.clip(plane, 0, 255)
    return out


def write_formats(image: np.ndarray, folder: Path, tile: int) -> dict[str, Path]:
    """Every benchmarked format of ``image``; returns label -> path (file or zarr store)."""
    paths: dict[str, Path] = {}
    tiled = {
        "tiff raw": {},
        "tiff deflate": {"compression": "zlib"},
        "tiff jpeg q90": {"compression": "jpeg", "compressionargs": {"level": 90}},
        "tiff zstd": {"compression": "zstd"},
    }
    for label, kwargs in tiled.items():
        paths[label] = folder / f"{label.replace(' ', '_')}.tif"
        tifffile.imwrite(paths[label], image, tile=(tile, tile), photometric="rgb", **kwargs)
    paths["tiff strips raw"] = folder / "strips.tif"
    tifffile.imwrite(paths["tiff strips raw"], image, photometric="rgb")
    store = folder / "image.ome.zarr"
    root = zarr.open_group(str(store), mode="w", zarr_format=3)
    root.create_array("0", data=np.moveaxis(image, -1, 0), chunks=(1, tile, tile))
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "yx"
    ]
    scale = [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]
    datasets = [{"path": "0", "coordinateTransformations": scale}]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    paths["ome-zarr v3 (default codec)"] = store
    for label, jpeg in (("dicom raw (wsidicom)", False), ("dicom jpeg (wsidicom)", True)):
        paths[label] = folder / label.split(" (")[0].replace(" ", "_")
        write_dicom_wsi(image, paths[label], tile=tile, jpeg=jpeg)
    return paths


def boxes(size: int, region: int) -> list[tuple[int, int]]:
    return [(y, x) for y in range(0, size, region) for x in range(0, size, region)]


def timed(read: Callable[[int, int], np.ndarray], regions: list[tuple[int, int]]) -> float:
    """Seconds to read every region once (after one warm-up read)."""
    read(*regions[0])
    start = time.perf_counter()
    for y, x in regions:
        read(y, x)
    return time.perf_counter() - start


def measure(label: str, path: Path, size: int, region: int, reference: np.ndarray) -> list[dict]:
    regions = boxes(size, region)
    start = time.perf_counter()
    source = open_image(path)
    open_s = time.perf_counter() - start
    first = source.read_padded(0, 0, 0, region)
    lossy = "jpeg" in label
    error = float(
        np.abs(first.astype(float) - reference[:region, :region].transpose(2, 0, 1)).mean()
    )
    assert lossy or error == 0, f"{label}: read back differs from the image written"
    nbytes = int(np.prod(first.shape)) * first.itemsize
    seconds = timed(lambda y, x: source.read_padded(0, y, x, region), regions)
    rows = [_row(label, "xt_engine read_padded", len(regions), seconds, nbytes, path, open_s)]
    rows[-1]["mean_abs_error_first_region"] = error
    if path.suffix == ".tif" and "strips" not in label:  # OpenSlide reads tiled TIFFs as generic
        slide = _openslide(path)
        if slide is not None:
            got = slide.read_padded(0, 0, 0, region)
            gap = np.abs(got.astype(int) - first).max()  # JPEG decoders may differ by 1-2
            assert gap <= (3 if lossy else 0), f"{label}: OpenSlide and tifffile disagree"
            seconds = timed(lambda y, x: slide.read_padded(0, y, x, region), regions)
            rows.append(
                _row(label, "openslide read_region", len(regions), seconds, nbytes, path, None)
            )
    if path.suffix == ".tif" and "strips" not in label:  # one strip would be one huge dask chunk
        import dask.array as da

        lazy = da.from_zarr(tifffile.imread(path, aszarr=True))
        got = np.asarray(lazy[:region, :region]).transpose(2, 0, 1)
        assert np.array_equal(got, first), f"{label}: dask and xt_engine disagree"
        seconds = timed(lambda y, x: _chw(lazy[y : y + region, x : x + region]), regions)
        rows.append(_row(label, "dask from_zarr", len(regions), seconds, nbytes, path, None))
    return rows


def _openslide(path: Path) -> Any:
    """The file through the OpenSlide reader (generic-tiff), or None where OpenSlide lacks its
    codec."""
    from xt_engine.errors import InputError
    from xt_engine.io.openslide_reader import open_openslide, openslide_vendor

    if openslide_vendor(path) is None:
        return None
    try:
        return open_openslide(path)
    except InputError:
        return None


def _chw(box: Any) -> np.ndarray:
    """A dask (h, w, 3) box computed into the (3, h, w) contiguous layout the engine returns."""
    return np.ascontiguousarray(np.asarray(box).transpose(2, 0, 1))


def _row(label: str, reader: str, n: int, s: float, nbytes: int, path: Path, open_s: Any) -> dict:
    disk = (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if path.is_dir()
        else (path.stat().st_size)
    )
    return {
        "format": label,
        "reader": reader,
        "regions": n,
        "seconds": s,
        "regions_per_s": n / s,
        "mb_per_s": n * nbytes / s / 1e6,
        "open_ms": None if open_s is None else 1000 * open_s,
        "file_mb": disk / 1e6,
    }


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['format']}\n{r['reader']}" for r in rows]
    colors = ["tab:blue" if r["reader"].startswith("xt") else "tab:gray" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    ax.barh(labels[::-1], [r["regions_per_s"] for r in rows][::-1], color=colors[::-1])
    ax.set_xlabel("regions / s (higher is better)")
    ax.set_title("256 x 256 RGB region reads, raster order")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--region", type=int, default=256)
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = smooth_rgb(args.size)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="xt_readers_") as tmp:
        start = time.perf_counter()
        paths = write_formats(image, Path(tmp), args.tile)
        write_s = time.perf_counter() - start
        for label, path in paths.items():
            rows.extend(measure(label, path, args.size, args.region, image))
    header = f"{'format':30s} {'reader':22s} {'regions/s':>10s} {'MB/s':>8s} {'open ms':>8s} {'file MB':>8s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        open_ms = f"{r['open_ms']:8.1f}" if r["open_ms"] is not None else f"{'':8s}"
        print(
            f"{r['format']:30s} {r['reader']:22s} {r['regions_per_s']:10.0f} "
            f"{r['mb_per_s']:8.0f} {open_ms} {r['file_mb']:8.1f}"
        )
    report = {
        "image": {"size": args.size, "channels": 3, "dtype": "uint8", "tile": args.tile},
        "region": args.region,
        "write_s": write_s,
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "tifffile": tifffile.__version__,
            "zarr": zarr.__version__,
        },
        "rows": rows,
    }
    (out / "readers.json").write_text(json.dumps(report, indent=2))
    png = plot(rows, out / "readers.png")
    print(f"wrote {out / 'readers.json'}" + (f" and {out / 'readers.png'}" if png else ""))


if __name__ == "__main__":
    main()
