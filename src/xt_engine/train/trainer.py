"""The training loop: xT crops, context carried over region chunks with gradients, AdamW with a
cosine schedule, validation, checkpoints that carry their config, resume, seeded.

``train(...)`` is a generator of :class:`TrainEvent` (the CLI draws a progress bar from them).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xt_engine.config import XTConfig
from xt_engine.errors import CheckpointError, ConfigError
from xt_engine.models import XTModel, create_model
from xt_engine.runtime.input_values import input_mapping
from xt_engine.runtime.schedule import forward_regions
from xt_engine.tasks import task_for
from xt_engine.tasks.base import crops_to_regions
from xt_engine.tasks.base import masks_to_regions as masks_to_regions  # re-exported
from xt_engine.train.config import TrainConfig
from xt_engine.train.context_probe import ContextProbe, probe_loss, token_targets
from xt_engine.train.data import IGNORE_INDEX, ClassBalancer, Pair, sample_crop
from xt_engine.train.distributed import average_gradients, barrier, broadcast_parameters, setup
from xt_engine.train.state import check_train_output, load_state, save_pair
from xt_engine.weights.checkpoint import read_checkpoint_config, save_checkpoint


@dataclass
class TrainEvent:
    step: int
    max_steps: int
    loss: float
    lr: float
    seconds: float
    val: dict[str, list[float]] | None = None
    checkpoint: str | None = None
    extra: dict[str, float] = field(default_factory=dict)


def parameter_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW's parameter groups: those marked ``_no_weight_decay`` (Mamba's ``A_log`` and ``D``,
    as mamba-ssm marks them) in a group without weight decay, the rest with ``weight_decay``;
    one group when none is marked."""
    exempt = [p for p in params if getattr(p, "_no_weight_decay", False)]
    decayed = [p for p in params if not getattr(p, "_no_weight_decay", False)]
    groups: list[dict] = [{"params": decayed, "weight_decay": weight_decay}]
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    return groups


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def forward_crops(
    model: XTModel,
    pixels: torch.Tensor,
    rc: torch.Tensor,
    valid: torch.Tensor | None = None,
    truncate: bool = False,
    with_tokens: bool = False,
) -> dict[str, torch.Tensor]:
    """Head outputs for regions (B, N, C, R, R) through the inference schedule's chunk
    functions (:func:`xt_engine.runtime.schedule.forward_regions`: the context over the model's
    ``chunk_regions`` chunks, both directions for bidirectional models, padded tokens left
    out), the state detached between chunks if ``truncate``: ``logits`` (B * N, K, R, R) for
    segmentation, ``heatmap`` / ``log_size`` (B * N, ., R/s, R/s) for detection; with
    ``with_tokens`` also ``tokens`` (B, N * gh * gw, D), the contextualised tokens."""
    out = forward_regions(model, pixels, rc, valid, truncate)
    keys = ("logits", "heatmap", "log_size") + (("tokens",) if with_tokens else ())
    return {key: getattr(out, key) for key in keys if getattr(out, key) is not None}


def content_to_tokens(content: torch.Tensor, model: XTModel) -> torch.Tensor:
    """Per-pixel content masks (B, S, S) bool -> (B, N * gh * gw) bool: tokens whose patch holds
    at least one real (not padded) pixel, regions in raster order like the crops'."""
    r = model.region_size
    gh, gw = model.token_grid
    b, s, _ = content.shape
    n = s // r
    regions = content.reshape(b, n, r, n, r).permute(0, 1, 3, 2, 4)  # (B, n, n, R, R)
    patches = regions.reshape(b, n, n, gh, r // gh, gw, r // gw).any(dim=(4, 6))
    return patches.reshape(b, -1)


def _batch(
    pairs: list[Pair],
    cfg: TrainConfig,
    rng: np.random.Generator,
    device: torch.device,
    model_config: XTConfig,
    balancer: ClassBalancer | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops (B, C, S, S) scaled as inference scales them (``region_encoder.input_scaling``),
    pixels past the image edge set to ``tiling.pad_value``; masks (B, S, S); content masks
    (B, S, S) bool (False on that padding). With a ``balancer``, class-balanced batches."""
    crops, masks = [], []
    classes = balancer.batch_classes(cfg.batch_size, rng) if balancer else [None] * cfg.batch_size
    for cls in classes:
        index = balancer.pick(cls, rng) if balancer and cls is not None else None
        pair = pairs[int(rng.integers(len(pairs))) if index is None else index]
        positive = rng.random() < cfg.positive_ratio
        image, mask = sample_crop(pair, cfg.crop_size, positive, rng, cfg.augment, cls)
        scale, offset = input_mapping(image.dtype, model_config.region_encoder)
        crop = image.astype(np.float32) * scale + offset
        crop[:, mask == IGNORE_INDEX] = model_config.tiling.pad_value  # only padding is ignored
        crops.append(crop)
        masks.append(mask)
    mask_batch = torch.from_numpy(np.stack(masks)).to(device)
    return (
        torch.from_numpy(np.stack(crops)).to(device),
        mask_batch,
        mask_batch != IGNORE_INDEX,
    )


def evaluate(
    model: XTModel,
    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
) -> dict[str, list[float]]:
    """The task's validation metrics over fixed validation crops (:meth:`Task.val_counts`
    summed, then :meth:`Task.val_scores`): segmentation per-class IoU and F1, detection
    per-class precision, recall and F1 of decoded centres (:mod:`xt_engine.tasks`)."""
    task = model.task
    counts = task.empty_counts(model.config.head)
    model.eval()
    with torch.inference_mode():
        for crops, masks, content in batches:
            pixels, rc = crops_to_regions(crops, model.region_size)
            out = forward_crops(model, pixels, rc, content_to_tokens(content, model))
            counts += task.val_counts(model, out, masks)
    model.train()
    return task.val_scores(counts)


# train options that change what a run draws or optimises, with their values in runs recorded
# before the option existed
_PATH_OPTIONS = {"balance_classes": False, "augment": True}


def _check_same_path(
    out: Path, cfg: TrainConfig, recorded: dict, has_probe: bool, saved_probe: bool
) -> None:
    """Refuses to resume ``out`` with options that would make the run another one than the
    uninterrupted run (the token probe on or off, class balancing, augmentation)."""
    if has_probe != saved_probe:
        state = "with" if saved_probe else "without"
        raise ConfigError(
            f"--resume: {out} was trained {state} the context probe",
            f"resume with train.context_aux_weight {'> 0' if saved_probe else '0'}, "
            "or write to a new --out",
        )
    for key, legacy in _PATH_OPTIONS.items():
        before = recorded.get(key, legacy)
        if before != getattr(cfg, key):
            raise ConfigError(
                f"--resume: {out} was trained with train.{key} {before}",
                f"resume with train.{key} {before}, or write to a new --out",
            )


def train(
    model_config: XTConfig,
    cfg: TrainConfig,
    train_pairs: list[Pair],
    val_pairs: list[Pair],
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
) -> Iterator[TrainEvent]:
    """Train a segmentation or detection model (detection objects: the connected components of
    the masks, see :mod:`xt_engine.tasks.detection_training`); the loss is the task's
    (:meth:`xt_engine.tasks.Task.loss`); checkpoints go to ``out`` (``.safetensors``), the
    optimizer state for ``resume`` beside it (``out`` + ``.trainstate.pt``), written as a pair;
    an existing ``out`` needs ``resume`` or ``overwrite`` (:mod:`xt_engine.train.state`)."""
    mode = check_train_output(out, resume=resume, overwrite=overwrite)
    task = task_for(model_config)
    if not task.trainable:
        raise task.untrainable()
    cfg.validate(model_config.tiling.region_size)
    ranks = setup(device)
    seed_everything(cfg.seed)
    if device.startswith("cuda") and ranks.world > 1:
        device = f"cuda:{ranks.local_rank}"
    dev = torch.device(device)
    model = create_model(model_config).to(dev).train()
    broadcast_parameters(model, ranks)
    enable = getattr(model.region_encoder.backbone, "set_grad_checkpointing", None)
    if cfg.grad_checkpointing and callable(enable):
        enable(True)
    probe = None  # deep supervision of the context tokens (training only, see context_probe)
    params = list(model.parameters())
    if (
        cfg.context_aux_weight > 0
        and task.pixel_outputs
        and model_config.context_encoder.kind != "none"
    ):
        probe = ContextProbe(model_config.context_encoder.dim, model_config.head.num_classes)
        probe = probe.to(dev).train()
        params += list(probe.parameters())
    optimizer = torch.optim.AdamW(parameter_groups(params, cfg.weight_decay), lr=cfg.lr)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    start_step = 0
    rng = np.random.default_rng(cfg.seed + 1000 * ranks.rank)  # each rank its own crops
    if mode == "resume":
        saved_config, extra = read_checkpoint_config(out)
        if saved_config != model_config:
            raise ConfigError(
                f"{out} was trained with another model config",
                "resume with the same config, or write to a new --out",
            )
        from safetensors.torch import load_file

        saved = load_state(out, dev)  # checked against the checkpoint's SHA-256
        _check_same_path(out, cfg, extra.get("train", {}), probe is not None, "probe" in saved)
        try:
            model.load_state_dict(load_file(str(out), device=str(dev)))
            if probe is not None:
                probe.load_state_dict(saved["probe"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            rng.bit_generator.state = saved["rng"]
            torch.set_rng_state(saved["torch_rng"].cpu())
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
            raise CheckpointError(
                f"the checkpoint or train state at {out} does not fit this model "
                f"({type(err).__name__}: {str(err)[:80]})".replace("\n", " "),
                "resume with the config it was trained with, or pass --overwrite",
            ) from err
        start_step = int(saved["step"])

    val_rng = np.random.default_rng(cfg.seed + 1)
    val_batches = (
        [
            _batch(val_pairs, cfg, val_rng, dev, model_config)
            for _ in range(max(1, cfg.val_crops // cfg.batch_size))
        ]
        if val_pairs
        else []
    )
    balancer = ClassBalancer(train_pairs) if cfg.balance_classes else None
    weights = torch.tensor(cfg.class_weights, device=dev) if cfg.class_weights else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    started = time.perf_counter()
    r = model_config.tiling.region_size
    for step in range(start_step, cfg.max_steps):
        crops, masks, content = _batch(train_pairs, cfg, rng, dev, model_config, balancer)
        pixels, rc = crops_to_regions(crops, r)
        rc = rc + torch.from_numpy(rng.integers(0, cfg.position_jitter + 1, 2)).to(rc)
        valid = content_to_tokens(content, model)
        with autocast:
            outputs = forward_crops(
                model, pixels, rc, valid, cfg.truncate_context, probe is not None
            )
            loss = model.task.loss(model, outputs, masks, cfg, weights)
            if probe is not None:
                tokens = outputs["tokens"]
                presence, real = token_targets(
                    masks, r, model.token_grid, model_config.head.num_classes
                )
                aux = probe_loss(probe(tokens.reshape(-1, tokens.shape[-1])), presence, real)
                loss = loss + cfg.context_aux_weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model, ranks)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        done = step + 1
        event = TrainEvent(
            done,
            cfg.max_steps,
            loss.item(),
            float(schedule.get_last_lr()[0]),
            time.perf_counter() - started,
        )
        if (done % cfg.val_every == 0 or done == cfg.max_steps) and not ranks.main:
            barrier(ranks)  # wait for rank 0's validation and checkpoint
        elif done % cfg.val_every == 0 or done == cfg.max_steps:
            event.val = evaluate(model, val_batches, cfg) if val_batches else None
            extra = {"step": done, "train": cfg.to_dict(), "val": event.val}
            save_pair(
                lambda path, extra=extra: save_checkpoint(model, path, extra=extra),
                out,
                {
                    "optimizer": optimizer.state_dict(),
                    **({"probe": probe.state_dict()} if probe is not None else {}),
                    "schedule": schedule.state_dict(),
                    "step": done,
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                },
            )
            event.checkpoint = str(out)
            barrier(ranks)
        yield event
