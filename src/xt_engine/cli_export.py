"""``xt export``: a result store in the formats users work with (:mod:`xt_engine.export`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_export_parser(sub: Any) -> None:
    from xt_engine.export import FORMATS

    p = sub.add_parser(
        "export", help="a result store as GeoJSON, GeoTIFF/COG, OME-TIFF, CSV/Parquet or a report"
    )
    p.add_argument("store", help="the OUT.zarr an `xt infer` run wrote")
    p.add_argument("--to", required=True, choices=list(FORMATS))
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--partial", action="store_true", help="export an unfinished run's store as it is"
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from xt_engine.export import export_store

    summary = export_store(
        args.store, args.to, args.out, overwrite=args.overwrite, partial=args.partial
    )
    details = ", ".join(f"{k} {v}" for k, v in summary.items() if k not in ("format", "out"))
    print(f"wrote {summary['out']} ({args.to}{': ' + details if details else ''})")
    return 0
