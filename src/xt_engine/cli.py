"""The ``xt`` command line: thin shells around the engine.

Exit codes: 0 done, 2 bad input or usage (one line naming the problem and the fix; ``--debug``
shows the traceback), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xt_engine.cli_batch import add_batch_parser
from xt_engine.cli_export import add_export_parser
from xt_engine.cli_infer import _progress, add_resolution_arguments, cmd_infer
from xt_engine.cli_train import add_train_parser
from xt_engine.errors import XTError
from xt_engine.runtime.feature_cache import DEFAULT_FEATURE_CACHE_MIB

if TYPE_CHECKING:  # the engine itself is imported lazily, per command
    pass


def cmd_models(args: argparse.Namespace) -> int:
    from xt_engine.models import model_config
    from xt_engine.weights.loading import user_models, weights_record

    for name in user_models():
        cfg = model_config(name)
        context = cfg.context_encoder.kind + (" x2" if cfg.context_encoder.bidirectional else "")
        record = weights_record(name)
        print(
            f"{name:26s} {'trained' if record.trained else 'UNTRAINED':9s} "
            f"{cfg.region_encoder.name:25s} {context:18s} "
            f"{cfg.head.task} ({cfg.head.num_classes} classes, {cfg.tiling.region_size} px "
            f"regions); weights: {record.source}"
        )
    print(
        "UNTRAINED entries are architectures with random weights (for `xt train` starts); "
        "`xt infer` refuses them without --allow-untrained."
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from xt_engine.io import open_image
    from xt_engine.io.describe import describe, info_lines

    info = describe(open_image(args.image))
    if args.json:
        print(json.dumps(info))
    else:
        print("\n".join(info_lines(info)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from xt_engine.demo import run_demo
    from xt_engine.errors import InputError

    if args.size < 256:
        raise InputError(f"--size {args.size} is too small for the demo scene", "use 256 or more")

    run_demo(
        out_dir=Path(args.out),
        size=args.size,
        seed=args.seed,
        model_spec=args.model,
        batch_size=args.batch_size,
        progress=_progress,
        overwrite=args.overwrite,
    )
    return 0


def cmd_import_xt(args: argparse.Namespace) -> int:
    from xt_engine.weights.checkpoint import save_checkpoint
    from xt_engine.weights.xt_import import import_xt_checkpoint

    model = import_xt_checkpoint(
        args.source, backbone=args.backbone, region_size=args.region_size, num_heads=args.num_heads
    )
    save_checkpoint(model, args.out, extra={"imported_from": str(args.source)})
    cfg = model.config
    print(
        f"wrote {args.out}: {cfg.region_encoder.name} -> {cfg.context_encoder.kind} "
        f"(D={cfg.context_encoder.dim}, {cfg.context_encoder.depth} layers) -> "
        f"{cfg.head.num_classes} classes"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from xt_engine import __version__

    parser = argparse.ArgumentParser(prog="xt", description="xT for extremely large images.")
    parser.add_argument("--version", action="version", version=f"napari-xt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="synthetic scene -> xT -> OME-Zarr + overview PNG + summary")
    p.add_argument("--size", type=int, default=4096, help="side of the square scene in px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="xt-demo", help="output folder")
    p.add_argument("--model", default="xt_demo_sar", help="registered name or checkpoint")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--overwrite", action="store_true", help="replace the result store of an earlier demo"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "info",
        help="format, vendor, levels with their pixel size, CRS, nodata, channels and "
        "associated images of an image",
    )
    p.add_argument("image")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("infer", help="run a model over an image, writing an OME-Zarr result")
    p.add_argument("image")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors) or registered name")
    p.add_argument("--out", required=True, help="output .zarr path")
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="classification: class names, one a line in class order (default: the model's)",
    )
    add_resolution_arguments(p)
    p.add_argument(
        "--roi",
        type=int,
        nargs=4,
        metavar=("Y0", "X0", "Y1", "X1"),
        help="region of interest in level-0 pixels",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="regions per region-encoder call (speed and memory only: the context chunks come "
        "from the model, so the result is the same for every batch size)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--threads",
        default="auto",
        help="CPU threads: auto (the cores other processes leave idle, sampled at start) or N",
    )
    p.add_argument("--attention", action="store_true", help="also write a per-token attention map")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="autocast dtype (auto: bf16/fp16 on CUDA, fp32 on CPU)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the region encoder, input projection and head (faster once "
        "compiled; the first batches pay the compilation; needs a C++ compiler on CPU)",
    )
    p.add_argument(
        "--keep-denormals",
        action="store_true",
        help="compute with denormal floats as the CPU does by default (slower on flat content; "
        "by default they are flushed to zero during the run, the same labels)",
    )
    p.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: the region encoder's linear layers in int8 (with --compile; needs torchao: "
        "pip install 'napari-xt[int8]'); labels close to fp32, not equal (docs/benchmarks.md)",
    )
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="also write float16 per-class probabilities (segmentation models)",
    )
    p.add_argument(
        "--overlap",
        type=int,
        default=0,
        help="px each region reads beyond its output tile on every side (no seams; costs "
        "(R/(R-2*overlap))^2 x the regions); segmentation is blended over that band",
    )
    p.add_argument(
        "--no-blend",
        dest="blend",
        action="store_false",
        help="with --overlap: keep each region's centre tile as is (no blending with neighbours)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted --out store of the same run"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing result store at --out (never anything else: other folders "
        "and the input are refused)",
    )
    p.add_argument(
        "--feature-cache-mib",
        type=int,
        default=DEFAULT_FEATURE_CACHE_MIB,
        help="a bidirectional model keeps the region features of the image's first regions "
        "in this much memory between its two passes, encoding them once (the same results "
        f"for any value; 0: none; default {DEFAULT_FEATURE_CACHE_MIB})",
    )
    p.add_argument(
        "--cache-dir",
        help="folder for a bidirectional model's temporary token cache (default: inside --out)",
    )
    p.add_argument(
        "--foreground",
        default="auto",
        metavar="auto|none|otsu|nodata|MASK",
        help="which regions run: auto (tissue by Otsu for brightfield slides, pixels with data "
        "for scenes and float images, all for other images), none (all), otsu, nodata, or a "
        "mask image (nonzero = foreground, any resolution); skipped regions are background",
    )
    p.add_argument(
        "--allow-untrained",
        action="store_true",
        help="run a registered architecture that has no trained weights (random: its output "
        "is noise; for speed tests and training starts)",
    )
    p.add_argument(
        "--detection-threshold",
        type=float,
        metavar="T",
        help="detection models: minimum centre score, in (0, 1) (default: the model's config)",
    )
    p.add_argument(
        "--max-detections",
        type=int,
        metavar="N",
        help="detection models: the most detections per region (default: the model's config)",
    )
    p.set_defaults(func=cmd_infer)

    add_batch_parser(sub)

    p = sub.add_parser("import-xt-checkpoint", help="convert a released xT .pth checkpoint")
    p.add_argument("source", help="released xT checkpoint (.pth, torch pickle)")
    p.add_argument("out", help="output .safetensors")
    p.add_argument("--backbone", help="timm SwinV2 name (default: detected from the shapes)")
    p.add_argument("--region-size", type=int, default=256)
    p.add_argument(
        "--num-heads",
        type=int,
        help="attention heads of the decoder (default: xT's dim // 128, whatever its config says)",
    )
    p.set_defaults(func=cmd_import_xt)

    add_train_parser(sub)

    p = sub.add_parser("models", help="list the registered model variants")
    p.set_defaults(func=cmd_models)

    add_export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for library in ("tifffile", "wsidicom"):  # their warnings about bad files come out as our
        logging.getLogger(library).setLevel(logging.CRITICAL)  # one-line InputError instead
    try:
        return int(args.func(args))
    except XTError as err:
        if args.debug:
            raise
        print(f"xt {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        hint = (
            " (the output is marked incomplete; add --resume to continue)"
            if args.command == "infer"
            else ""
        )
        print(
            f"\nxt {args.command}: interrupted after {time.perf_counter() - started:.0f} s{hint}",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
