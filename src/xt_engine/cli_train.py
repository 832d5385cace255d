"""``xt train``: train a model on large images and label masks (:mod:`xt_engine.train`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on large images and label masks")
    p.add_argument("--images", help="folder of images (matched to masks by file name)")
    p.add_argument("--masks", help="folder of integer label masks")
    p.add_argument(
        "--annotations",
        help="folder of QuPath GeoJSON exports (IMAGE_STEM.geojson), instead of --masks: class "
        "names map to head.class_names, points train detection heads",
    )
    p.add_argument(
        "--unlabelled",
        choices=("ignore", "background"),
        default="ignore",
        help="with --annotations: pixels no annotation covers are left out of the loss "
        "(default) or class 0",
    )
    p.add_argument("--manifest", help="JSON/CSV list of image, mask pairs (instead of folders)")
    p.add_argument("--config", help="JSON/YAML: model config sections plus a 'train' section")
    p.add_argument(
        "--recipe",
        help="a recipe kept in the repository: demo-sar, or a context task of the suite "
        "(context-near-cue, context-global-cue, context-offset, context-count)",
    )
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--resume", action="store_true", help="continue the training of --out (its train state)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out checkpoint")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_train)


def _read_config_file(path: Path) -> dict:
    from xt_engine.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", "pass a JSON or YAML file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parse error is the user's file
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping with model sections and 'train'")
    return data


def cmd_train(args: argparse.Namespace) -> int:
    from xt_engine.config import XTConfig
    from xt_engine.errors import ConfigError
    from xt_engine.train.config import TrainConfig
    from xt_engine.train.data import find_pairs, load_pairs, split_pairs
    from xt_engine.train.recipes import recipe, write_context_task_data, write_demo_data
    from xt_engine.train.state import check_train_output
    from xt_engine.train.trainer import train

    out = Path(args.out)
    check_train_output(out, resume=args.resume, overwrite=args.overwrite)  # before any work
    images = Path(args.images) if args.images else None
    masks = Path(args.masks) if args.masks else None
    if args.annotations:
        if masks is not None:
            raise ConfigError(
                "--masks and --annotations both given", "pass label masks or annotations"
            )
        masks = Path(args.annotations)
    if args.recipe:
        data = dict(recipe(args.recipe))
        spec = data.pop("data")
        if images is None and args.manifest is None:
            folder = out.with_name(out.stem + "-data")
            if "task" in spec:  # a context task of the suite
                images, masks = write_context_task_data(
                    folder, spec["task"], spec["scenes"], spec["size"], spec["region"]
                )
            else:
                images, masks = write_demo_data(
                    folder, spec["scenes"], spec["size"], spec["vessels"]
                )
    elif args.config:
        data = _read_config_file(Path(args.config))
    else:
        raise ConfigError(
            "no model config given", "pass --config CFG.json|yaml or --recipe demo-sar"
        )
    train_section = dict(data.pop("train", {}) or {})
    for key in ("max_steps", "seed"):
        if getattr(args, key) is not None:
            train_section[key] = getattr(args, key)
    model_config = XTConfig.from_dict(data)
    cfg = TrainConfig.from_dict(train_section)
    paths = find_pairs(images, masks, Path(args.manifest) if args.manifest else None)
    pairs = load_pairs(
        paths,
        model_config.head.num_classes,
        cfg.seed,
        list(model_config.head.names()),
        args.unlabelled,
    )
    train_pairs, val_pairs = split_pairs(pairs, args.val_fraction)
    run = {"resume": args.resume, "overwrite": args.overwrite, "device": args.device}
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        for _ in train(model_config, cfg, train_pairs, val_pairs, out, **run):
            pass
        return 0
    world = int(os.environ.get("WORLD_SIZE", "1"))
    print(
        f"training in {world} process(es) on {len(train_pairs)} image(s), validating on "
        f"{len(val_pairs)}; {cfg.max_steps} steps of {cfg.batch_size} x {cfg.crop_size} px crops"
    )
    tty = sys.stderr.isatty()
    names = model_config.head.names()
    for event in train(model_config, cfg, train_pairs, val_pairs, out, **run):
        if not tty and event.step % 25 == 0 and event.val is None:
            print(
                f"step {event.step}/{event.max_steps} loss {event.loss:.4f} {event.seconds:.0f}s",
                flush=True,
            )
        if tty:
            sys.stderr.write(
                f"\rstep {event.step}/{event.max_steps} loss {event.loss:.4f} "
                f"lr {event.lr:.2e} {event.seconds:.0f}s "
            )
        if event.val is not None:
            f1 = ", ".join(f"{n} {v:.3f}" for n, v in zip(names, event.val["f1"], strict=True))
            other = "IoU" if "iou" in event.val else "recall"
            values = ", ".join(f"{v:.3f}" for v in event.val[other.lower()])
            line = f"step {event.step}: loss {event.loss:.4f}; val F1: {f1}; {other}: {values}"
            print("\n" + line if tty else line)
    print(f"wrote {out}")
    return 0
