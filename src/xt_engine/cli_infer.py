"""``xt infer``: one image through a model into a result store (see :mod:`xt_engine.cli`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine itself is imported lazily
    from xt_engine.models import XTModel
    from xt_engine.runtime import Finished


def _progress(events: Iterable[object], quiet: bool = False) -> Finished:
    """Drain a run's events, drawing a one-line progress bar on a terminal; return Finished."""
    from xt_engine.runtime import Finished, Progress

    tty = sys.stderr.isatty() and not quiet
    finished: Finished | None = None
    for event in events:
        if isinstance(event, Progress) and tty:
            width = 30
            filled = int(width * event.done / max(event.total, 1))
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {event.done}/{event.total} "
                f"{event.regions_per_s:.1f} regions/s ETA {event.eta_s:.0f}s "
            )
            sys.stderr.flush()
        if isinstance(event, Finished):
            finished = event
    if tty:
        sys.stderr.write("\n")
    if finished is None:  # every run ends with one; an engine bug otherwise
        raise RuntimeError("the run's events ended without a Finished event")
    return finished


def _device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device that is missing is an
    input error naming the fix."""
    import torch

    from xt_engine.errors import InputError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (index and kind == "cpu"):
        raise InputError(f"--device {name} is not a device here", "use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device here", "use --device cpu or auto")
    return name


def _model_provenance(spec: str) -> dict[str, object]:
    """The model as named, whether its weights are trained, and the SHA-256 of the weights
    file behind it, if any (the weights themselves are hashed in ``xt.determinants``)."""
    import hashlib

    from xt_engine.weights.loading import bundled_checkpoint, is_trained

    path = Path(spec) if Path(spec).is_file() else bundled_checkpoint(spec)
    info: dict[str, object] = {"model": spec, "trained_weights": is_trained(spec)}
    if path is not None:
        info["checkpoint"] = str(path)
        info["checkpoint_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return info


def _detection_overrides(model: XTModel, args: argparse.Namespace) -> None:
    """``--detection-threshold`` / ``--max-detections`` replace the model's head values for this
    run (validated; the store's recorded model config shows the values used)."""
    import dataclasses

    from xt_engine.errors import ConfigError

    changes = {
        key: value
        for key, value in (
            ("detection_threshold", args.detection_threshold),
            ("max_detections", args.max_detections),
        )
        if value is not None
    }
    if not changes:
        return
    head = model.config.head
    if head.task != "detection":
        raise ConfigError(
            f"--detection-threshold / --max-detections need a detection model, not {head.task}",
            "drop those options for this model",
        )
    updated = dataclasses.replace(head, **changes)
    try:
        updated.validate()
    except ConfigError as err:
        problem = f"--detection-threshold / --max-detections: {err.problem}"
        raise ConfigError(problem, err.fix) from err
    model.config.head = updated


def add_resolution_arguments(p: argparse.ArgumentParser) -> None:
    """``--level``, ``--mpp``, ``--pixel-size``, ``--pixel-unit``: which level a run reads."""
    p.add_argument(
        "--level",
        type=int,
        help="pyramid level to run on (default: the level closest to --mpp / --pixel-size or "
        "to the pixel size the model was trained at, else 0)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--mpp",
        type=float,
        metavar="X",
        help="run at X micrometres per pixel: the closest pyramid level, resampled from the "
        "next finer level when none is within 10%%",
    )
    size.add_argument(
        "--pixel-size",
        metavar="X[UNIT]",
        help="as --mpp in any unit: 0.5um, 10m, 0.0001deg, or a bare number in --pixel-unit",
    )
    p.add_argument(
        "--pixel-unit",
        metavar="UNIT",
        help="unit of a bare --pixel-size: micrometer (default), nanometer, millimeter, meter, "
        "kilometer or degree",
    )


def _resolution_target(args: argparse.Namespace) -> tuple[float | None, str | None]:
    """(size, unit) asked for on the command line, or (None, None)."""
    from xt_engine.errors import InputError
    from xt_engine.runtime.resolution import canonical_unit, parse_pixel_size

    if args.pixel_unit is not None and canonical_unit(args.pixel_unit) is None:
        raise InputError(
            f"--pixel-unit {args.pixel_unit!r} is unknown",
            "use micrometer, nanometer, millimeter, meter, kilometer or degree",
        )
    if args.mpp is not None:
        if not args.mpp > 0 or args.pixel_unit is not None:
            raise InputError(
                f"--mpp {args.mpp} must be a positive number of micrometres, without --pixel-unit",
                "use e.g. --mpp 0.5, or --pixel-size 10 --pixel-unit meter",
            )
        return args.mpp, "micrometer"
    if args.pixel_size is not None:
        return parse_pixel_size(args.pixel_size, canonical_unit(args.pixel_unit))
    if args.pixel_unit is not None:
        raise InputError("--pixel-unit needs --pixel-size", "add --pixel-size X")
    return None, None


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    """Our warnings as one ``xt infer: warning:`` line on stderr."""
    print(f"xt infer: warning: {message}", file=sys.stderr)


def cmd_infer(args: argparse.Namespace) -> int:
    import warnings

    from xt_engine.errors import XTWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", XTWarning)
        warnings.showwarning = _print_warning
        return _infer(args)


def _infer(args: argparse.Namespace) -> int:
    from xt_engine.errors import InputError
    from xt_engine.io import open_image

    size, unit = _resolution_target(args)
    source = open_image(args.image)  # before torch is imported: a wrong path answers at once

    from xt_engine.runtime import run_inference
    from xt_engine.runtime.input_values import check_inputs
    from xt_engine.runtime.resolution import plan_resolution
    from xt_engine.tiling import box_at_level
    from xt_engine.weights.loading import load_model

    model = load_model(args.model, allow_untrained=args.allow_untrained)
    _detection_overrides(model, args)
    check_inputs(source, model.config)  # the model's channels and value type, before the plan
    planned = plan_resolution(
        source, model.config.tiling, level=args.level, pixel_size=size, pixel_unit=unit
    )
    opened, (source, level) = source, (planned.source, planned.level)
    targeted = size is not None or (args.level is None and model.config.tiling.pixel_size)
    if planned.pixel_size is not None and targeted:
        how = "resampled" if planned.resampled else "pyramid level"
        print(
            f"xt infer: level {level} ({how}): {planned.pixel_size:.4g} {planned.unit} per pixel",
            file=sys.stderr,
        )
    roi = None
    if args.roi:  # level-0 pixels of the file, also when a resampled level is finer
        h, w = opened.shape_yx(0)
        y0, x0, y1, x1 = args.roi
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise InputError(
                f"--roi {y0} {x0} {y1} {x1} is empty or outside the image of {h} x {w} px",
                f"give level-0 pixels with 0 <= Y0 < Y1 <= {h} and 0 <= X0 < X1 <= {w}",
            )
        (lh, lw) = source.shape_yx(level)
        roi = box_at_level((y0, x0, y1, x1), (h / lh, w / lw), (lh, lw))
    if args.labels:
        _apply_labels(model, Path(args.labels))
    device = _device(args.device)
    if device.startswith("cpu"):
        from xt_engine.runtime.precision import slow_precision_note
        from xt_engine.runtime.threads import use_threads

        use_threads(args.threads)
        note = slow_precision_note(args.precision, device)
        if note:
            print(f"xt infer: {note}", file=sys.stderr)
    finished = _progress(
        run_inference(
            source,
            model,
            output=args.out,
            level=level,
            roi=roi,
            batch_size=args.batch_size,
            device=device,
            attention=args.attention,
            resume=args.resume,
            overwrite=args.overwrite,
            cache_dir=args.cache_dir,
            feature_cache_mib=args.feature_cache_mib,
            foreground=args.foreground,
            provenance=_model_provenance(args.model),
            precision=args.precision,
            compile=args.compile,
            flush_denormal=not args.keep_denormals,
            quantize=args.quantize,
            overlap=args.overlap,
            probabilities=args.probabilities,
            blend=args.blend,
        )
    )
    print(
        f"wrote {args.out}: {finished.done} regions in {finished.seconds:.1f} s "
        f"({finished.done / max(finished.seconds, 1e-9):.1f} regions/s)"
    )
    if finished.image_probabilities is not None:
        _print_top_classes(finished.image_probabilities, model.config.head.class_names)
    _print_report(Path(args.out))
    return 0


def _print_report(store: Path) -> None:
    """The per-image report the run wrote into the store (xt.report), one line per class."""
    import zarr

    report = dict(zarr.open_group(str(store), mode="r").attrs["xt"]).get("report")  # type: ignore[arg-type]
    if not isinstance(report, dict):
        return
    for row in report.get("classes", []):
        parts = []
        if "fraction" in row:
            parts.append(f"{100 * row['fraction']:6.2f}% of the area")
        if "area_large" in row:
            parts.append(f"{row['area_large']:.4g} {row['area_large_unit']}")
        if "detections" in row:
            parts.append(f"{row['detections']} detections, mean score {row['mean_score']:.3f}")
        if parts:
            print(f"  {row['class']:>20s}: " + ", ".join(parts))


def _apply_labels(model: XTModel, path: Path) -> None:
    """``--labels FILE``: one class name per line (blank lines at the end ignored) become the
    head's class names for this run (printed, and recorded in the store)."""
    import dataclasses

    from xt_engine.errors import InputError

    if not path.is_file():
        raise InputError(f"--labels {path} does not exist", "pass a text file, one name a line")
    names = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    names = [name.rstrip("\r") for name in names]
    head = model.config.head
    if len(names) != head.num_classes:
        raise InputError(
            f"--labels {path.name} has {len(names)} names for the model's {head.num_classes} "
            "classes",
            f"give exactly {head.num_classes} lines, one class name each, in class order",
        )
    model.config.head = dataclasses.replace(head, class_names=tuple(names))


def _print_top_classes(
    probabilities: Sequence[float], names: Sequence[str] | None, count: int = 5
) -> None:
    """The ``count`` most probable image classes, best first: rank, probability, name (and
    the class index after a name; ``class_K`` without names)."""
    ranked = sorted(range(len(probabilities)), key=lambda k: -probabilities[k])[:count]
    print(f"top {len(ranked)} classes:")
    for rank, k in enumerate(ranked, 1):
        name = f"{names[k]} ({k})" if names is not None and k < len(names) else f"class_{k}"
        print(f"  {rank}. p = {probabilities[k]:.4f}  {name}")
