"""``xt batch``: many images through one model on ``dask.distributed`` (see
:mod:`xt_engine.batch`).

Exit codes: 0 every image done or skipped, 1 some image failed (the report names it and why),
2 bad input or usage (one line), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from xt_engine.cli_infer import _resolution_target, add_resolution_arguments
from xt_engine.runtime.feature_cache import DEFAULT_FEATURE_CACHE_MIB


def add_batch_parser(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="run a model over many images (folders, globs, manifests) on dask.distributed, "
        "one result store each, with a run report",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a folder (searched recursively), a quoted glob, a CSV/JSON manifest (path, "
        "roi, level, output) or an image",
    )
    p.add_argument("--model", required=True, help="checkpoint (.safetensors) or registered name")
    p.add_argument("--out-dir", required=True, help="folder for the stores and report.csv")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--cluster",
        metavar="local[:N]",
        help="a local dask cluster (default): one worker per GPU, else N processes sharing "
        "the cores (default: one per core, at most one per 2 GiB of memory)",
    )
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing dask scheduler")
    where.add_argument(
        "--shard",
        metavar="I/N",
        help="run share I of N of the inputs in this process, no scheduler (default from "
        "SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when set)",
    )
    p.add_argument("--threads-per-worker", type=int, help="local cluster: threads per worker")
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="times an image is tried again after its worker died (default 2)",
    )
    p.add_argument(
        "--resources",
        metavar="NAME=N",
        help="worker resources each image needs (e.g. GPU=1; default: GPU=1 or image=1 when "
        "every worker declares it)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="redo images whose store is complete or partial"
    )
    p.add_argument("--allow-untrained", action="store_true", help="as for xt infer")
    add_resolution_arguments(p)
    p.add_argument("--batch-size", type=int, default=8, help="regions per model call")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (on each worker)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument(
        "--compile", action="store_true", help="as for xt infer (compiled once per worker)"
    )
    p.add_argument("--keep-denormals", action="store_true", help="as for xt infer")
    p.add_argument("--quantize", default="none", choices=("none", "int8"), help="as for xt infer")
    p.add_argument(
        "--feature-cache-mib",
        type=int,
        default=DEFAULT_FEATURE_CACHE_MIB,
        help="as for xt infer (per worker)",
    )
    p.add_argument("--foreground", default="auto", metavar="auto|none|otsu|nodata")
    p.add_argument("--overlap", type=int, default=0, help="as for xt infer")
    p.add_argument("--no-blend", dest="blend", action="store_false")
    p.add_argument("--probabilities", action="store_true")
    p.add_argument("--attention", action="store_true")
    p.add_argument("--labels", metavar="FILE", help="class names, one a line")
    p.add_argument("--detection-threshold", type=float, metavar="T")
    p.add_argument("--max-detections", type=int, metavar="N")
    p.set_defaults(func=cmd_batch)


def _shard(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--shard I/N``, else the Slurm array task's share when no executor is named."""
    from xt_engine.batch.inputs import parse_shard

    if args.shard:
        return parse_shard(args.shard)
    task, count = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_ARRAY_TASK_COUNT")
    if task is None or count is None or args.cluster or args.scheduler:
        return None
    first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
    return parse_shard(f"{int(task) - first}/{count}")


def cmd_batch(args: argparse.Namespace) -> int:
    from xt_engine.batch.cluster import open_client, parse_cluster, parse_resources, task_resources
    from xt_engine.batch.inputs import collect_inputs, shard
    from xt_engine.batch.progress import BatchProgress
    from xt_engine.batch.report import write_report
    from xt_engine.batch.runner import new_run_id, run_batch
    from xt_engine.batch.worker import ModelCache, RunOptions
    from xt_engine.errors import InputError
    from xt_engine.runtime.quantized import check_quantize

    size, unit = _resolution_target(args)
    if (
        args.foreground not in ("auto", "none", "otsu", "nodata")
        and not Path(args.foreground).is_file()
    ):
        raise InputError(f"--foreground {args.foreground} is unknown", "auto|none|otsu|nodata|MASK")
    if args.cluster:
        parse_cluster(args.cluster)
    if args.retries < 0 or args.batch_size < 1:
        raise InputError("--retries must be >= 0 and --batch-size >= 1", "e.g. --retries 2")
    check_quantize(args.quantize, args.compile)
    resources = parse_resources(args.resources)
    out_dir = Path(args.out_dir)
    tasks = collect_inputs(args.inputs, out_dir)
    share = _shard(args)
    if share is not None:
        tasks = shard(tasks, *share)
    options = RunOptions(
        model=args.model,
        out_dir=str(out_dir.resolve()),
        run_id=new_run_id(),
        allow_untrained=args.allow_untrained,
        level=args.level,
        pixel_size=size,
        pixel_unit=unit,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        flush_denormal=not args.keep_denormals,
        quantize=args.quantize,
        feature_cache_mib=args.feature_cache_mib,
        foreground=str(Path(args.foreground).resolve())
        if Path(args.foreground).is_file()
        else args.foreground,
        overlap=args.overlap,
        blend=args.blend,
        probabilities=args.probabilities,
        attention=args.attention,
        overwrite=args.overwrite,
        labels=str(Path(args.labels).resolve()) if args.labels else None,
        detection_threshold=args.detection_threshold,
        max_detections=args.max_detections,
    )
    cache = ModelCache()
    cache.get(options)  # the model's problems as one line, before any worker starts
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = BatchProgress(len(tasks))
    if share is not None:
        print(f"xt batch: shard {share[0]}/{share[1]}: {len(tasks)} images", file=sys.stderr)
        results = run_batch(tasks, options, listener=progress, cache=cache)
        stem = f"report.shard-{share[0]}-of-{share[1]}"
    else:
        use_gpus = args.device != "cpu"
        with open_client(args.cluster, args.scheduler, args.threads_per_worker, use_gpus) as client:
            workers = client.scheduler_info().get("workers", {})
            print(
                f"xt batch: {len(tasks)} images on {len(workers)} workers; dashboard "
                f"{client.dashboard_link}",
                file=sys.stderr,
            )
            results = run_batch(
                tasks,
                options,
                client,
                retries=args.retries,
                resources=task_resources(client, resources),
                listener=progress,
            )
        stem = "report"
    report = write_report(out_dir, results, stem)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    print(
        f"wrote {report}: {counts['done']} done, {counts['skipped']} skipped, "
        f"{counts['failed']} failed"
    )
    for result in results:
        if result.status == "failed":
            print(f"  failed {result.image}: {result.error}", file=sys.stderr)
    return 0 if counts["failed"] == 0 else 1
