"""The label image as a raster file other tools open: a Cloud-Optimised GeoTIFF in the scene's
CRS (QGIS, GDAL), or a pyramidal OME-TIFF with the pixel size (QuPath, napari, Fiji).

Both stream the store's label pyramid band by band (one row of tiles at a time), so memory is
bounded by a band, never by the image.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xt_engine.export.result import ResultView

TILE = 256
GDAL_CACHE_MB = 64


def write_geotiff(result: ResultView, out: Path) -> dict[str, Any]:
    """A tiled, deflate-compressed COG of the labels with overviews, carrying the source's CRS
    and geotransform (scaled to the inference level) and its nodata: as the band's nodata when
    a uint8 label can hold it (e.g. 0, where pixels without data are labelled 0), always as the
    ``XT_SOURCE_NODATA`` tag. Returns what was written."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import Affine

    labels = result.labels[0]
    h, w = (int(v) for v in labels.shape)
    a, b, c, d, e, f = result.level0_affine()
    crs = None
    if result.georeference is not None:
        geo = result.georeference
        crs = CRS.from_epsg(geo["crs_epsg"]) if geo.get("crs_epsg") else CRS.from_wkt(
            geo["crs_wkt"]
        )
    tags = {"XT_STORE": str(result.path), "XT_CLASSES": ",".join(result.names)}
    nodata = result.xt.get("source", {}).get("nodata")
    if nodata is not None:
        tags["XT_SOURCE_NODATA"] = str(nodata)
    # pixels without data are labelled 0 (background); a source nodata that a label can hold
    # (e.g. 0) becomes the band's nodata, so GIS tools show those pixels (and background) empty
    label_nodata = _label_nodata(nodata)
    # GDAL's block cache defaults to 5% of the RAM: bounded here, so memory follows the band
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), tempfile.TemporaryDirectory(
        dir=out.parent
    ) as tmp:
        plain = Path(tmp) / "labels.tif"
        profile = {
            "driver": "GTiff",
            "width": w,
            "height": h,
            "count": 1,
            "dtype": "uint8",
            "tiled": True,
            "blockxsize": TILE,
            "blockysize": TILE,
            "compress": "deflate",
            "transform": Affine(a, b, c, d, e, f),
            "crs": crs,
            "nodata": label_nodata,
        }
        with rasterio.open(plain, "w", **profile) as dst:
            for top, band in _bands(labels):
                dst.write(band[None], window=((top, top + band.shape[0]), (0, w)))
            factors = [2**k for k in range(1, 16) if max(h, w) / 2**k >= TILE]
            if factors:
                dst.build_overviews(factors, Resampling.nearest)
            dst.update_tags(**tags)
            _colormap(dst, result)
        rio_copy(plain, out, driver="COG", compress="DEFLATE", blocksize=TILE,
                 overview_resampling="nearest")
    return {"shape": [h, w], "crs": crs.to_string() if crs else None}


def _label_nodata(nodata: object) -> int | None:
    """The source's nodata as a uint8 label value, when it is one (else None)."""
    try:
        value = float(nodata)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() and 0 <= value <= 255 else None


def _colormap(dst: Any, result: ResultView) -> None:
    colors = {i: tuple(int(v) for v in rgba) for i, rgba in enumerate(result.colors)}
    if colors:
        dst.write_colormap(1, colors)


def write_ome_tiff(result: ResultView, out: Path) -> dict[str, Any]:
    """A pyramidal OME-TIFF (tiled, deflate, the store's pyramid levels as sub-resolutions)
    with the physical pixel size when the source states one."""
    import tifffile

    levels = result.labels
    metadata: dict[str, Any] = {"axes": "YX", "Name": "segmentation"}
    if result.pixel_size is not None and result.unit in ("micrometer", "meter"):
        dy, dx = result.downsample
        unit = "µm" if result.unit == "micrometer" else "m"
        metadata |= {
            "PhysicalSizeY": result.pixel_size[0] * dy,
            "PhysicalSizeX": result.pixel_size[1] * dx,
            "PhysicalSizeYUnit": unit,
            "PhysicalSizeXUnit": unit,
        }
    with tifffile.TiffWriter(out, bigtiff=True, ome=True) as tif:
        for k, level in enumerate(levels):
            h, w = (int(v) for v in level.shape)
            tif.write(
                _tiles(level),
                shape=(h, w),
                dtype=np.uint8,
                subifds=len(levels) - 1 if k == 0 else None,
                subfiletype=1 if k else 0,
                metadata=metadata if k == 0 else None,
                tile=(TILE, TILE),
                compression="zlib",
                photometric="minisblack",
            )
    return {"levels": len(levels), "shape": list(levels[0].shape)}


def _bands(array: Any) -> Iterator[tuple[int, np.ndarray]]:
    h = int(array.shape[0])
    step = TILE * -(-int(array.chunks[0]) // TILE)  # whole tile rows
    for top in range(0, h, step):
        yield top, np.asarray(array[top : min(top + step, h)])


def _tiles(array: Any) -> Iterator[np.ndarray]:
    """TILE x TILE tiles in row-major order, edge tiles padded with zeros (tifffile's order)."""
    w = int(array.shape[1])
    for _, band in _bands(array):
        for ty in range(0, band.shape[0], TILE):
            for tx in range(0, w, TILE):
                tile = np.zeros((TILE, TILE), np.uint8)
                part = band[ty : ty + TILE, tx : tx + TILE]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile
