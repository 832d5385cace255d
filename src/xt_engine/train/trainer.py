"""The training loop: xT crops, context carried over region chunks with gradients, AdamW with a
cosine schedule, validation, checkpoints that carry their config, resume, seeded.

``train(...)`` is a generator of :class:`TrainEvent` (the CLI draws a progress bar from them).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xt_engine.config import XTConfig
from xt_engine.errors import ConfigError
from xt_engine.models import XTModel, create_model
from xt_engine.models.heads import decode_detections, segmentation_labels
from xt_engine.runtime.inference import pixel_scale
from xt_engine.runtime.schedule import forward_regions
from xt_engine.train.config import TrainConfig
from xt_engine.train.data import IGNORE_INDEX, Pair, sample_crop
from xt_engine.train.detection import (
    detection_loss,
    detection_scores,
    detection_targets,
    match_counts,
)
from xt_engine.train.distributed import average_gradients, barrier, broadcast_parameters, setup
from xt_engine.train.losses import segmentation_loss
from xt_engine.train.metrics import confusion, scores
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def crops_to_regions(crops: torch.Tensor, region: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> regions (B, N, C, R, R) in raster order and their (N, 2) grid (row, col)."""
    b, c, s, _ = crops.shape
    n = s // region
    regions = crops.reshape(b, c, n, region, n, region).permute(0, 2, 4, 1, 3, 5)
    rc = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1)
    return regions.reshape(b, n * n, c, region, region), rc.reshape(-1, 2).to(crops.device)


def masks_to_regions(masks: torch.Tensor, region: int) -> torch.Tensor:
    """(B, S, S) -> (B * N, R, R), regions batch-major in raster order."""
    b, s, _ = masks.shape
    n = s // region
    return masks.reshape(b, n, region, n, region).permute(0, 1, 3, 2, 4).reshape(-1, region, region)


def forward_crops(
    model: XTModel,
    pixels: torch.Tensor,
    rc: torch.Tensor,
    valid: torch.Tensor | None = None,
    truncate: bool = False,
) -> dict[str, torch.Tensor]:
    """Head outputs for regions (B, N, C, R, R) through the inference schedule's chunk
    functions (:func:`xt_engine.runtime.schedule.forward_regions`: the context over the model's
    ``chunk_regions`` chunks, both directions for bidirectional models, padded tokens left
    out), the state detached between chunks if ``truncate``: ``logits`` (B * N, K, R, R) for
    segmentation, ``heatmap`` / ``log_size`` (B * N, ., R/s, R/s) for detection."""
    out = forward_regions(model, pixels, rc, valid, truncate)
    return {
        key: getattr(out, key)
        for key in ("logits", "heatmap", "log_size")
        if getattr(out, key) is not None
    }


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


def _targets(model: XTModel, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detection targets of mask crops (B, S, S), split into regions like the outputs."""
    stride, r = model.output_stride, model.region_size
    heat, log_size, centres = detection_targets(
        masks.cpu().numpy(), model.config.head.num_classes, stride
    )
    maps = {"heat": heat, "log_size": log_size, "centres": centres[:, None]}
    return {
        key: crops_to_regions(torch.from_numpy(value).to(masks.device), r // stride)[0].flatten(
            0, 1
        )
        for key, value in maps.items()
    }


def _loss(
    model: XTModel,
    outputs: dict[str, torch.Tensor],
    masks: torch.Tensor,
    cfg: TrainConfig,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    if "logits" in outputs:
        target = masks_to_regions(masks, model.region_size)
        return segmentation_loss(outputs["logits"].float(), target, cfg.dice_weight, weights)
    t = _targets(model, masks)
    return detection_loss(
        outputs["heatmap"].float(),
        outputs["log_size"].float(),
        t["heat"],
        t["log_size"],
        t["centres"][:, 0],
    )


def _batch(
    pairs: list[Pair],
    cfg: TrainConfig,
    rng: np.random.Generator,
    device: torch.device,
    model_config: XTConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops (B, C, S, S) scaled as inference scales them (``region_encoder.input_scaling``),
    pixels past the image edge set to ``tiling.pad_value``; masks (B, S, S); content masks
    (B, S, S) bool (False on that padding)."""
    crops, masks = [], []
    for _ in range(cfg.batch_size):
        pair = pairs[int(rng.integers(len(pairs)))]
        image, mask = sample_crop(pair, cfg.crop_size, rng.random() < cfg.positive_ratio, rng)
        scale = pixel_scale(image.dtype, model_config.region_encoder.input_scaling)
        crop = image.astype(np.float32) * scale
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
    """Segmentation: per-class IoU and F1 over fixed validation crops; detection: per-class
    precision, recall and F1 of decoded centres (see :mod:`.detection`)."""
    k = model.config.head.num_classes
    r = model.region_size
    matrix = np.zeros((k, k), np.int64)
    counts = np.zeros((k, 3), np.int64)
    model.eval()
    with torch.inference_mode():
        for crops, masks, content in batches:
            pixels, rc = crops_to_regions(crops, r)
            out = forward_crops(model, pixels, rc, content_to_tokens(content, model))
            if "logits" in out:
                matrix += confusion(
                    segmentation_labels(out["logits"]), masks_to_regions(masks, r), k
                )
                continue
            heat = _targets(model, masks)["heat"]
            for i in range(len(heat)):
                peaks = decode_detections(
                    out["heatmap"][i].float(),
                    out["log_size"][i].float(),
                    model.output_stride,
                    head=model.config.head,
                )
                counts += match_counts(peaks, heat[i], k, 1.5, model.output_stride)
    model.train()
    return scores(matrix) if model.config.head.task == "segmentation" else detection_scores(counts)


def train(
    model_config: XTConfig,
    cfg: TrainConfig,
    train_pairs: list[Pair],
    val_pairs: list[Pair],
    out: Path,
    *,
    resume: bool = False,
    device: str = "cpu",
) -> Iterator[TrainEvent]:
    """Train a segmentation or detection model (detection objects: the connected components of
    the masks, see :mod:`.detection`); checkpoints go to ``out`` (``.safetensors``), the
    optimizer state for ``resume`` beside it (``out`` + ``.trainstate.pt``)."""
    if model_config.head.task == "classification":
        raise ConfigError(
            "training a classification head is not supported yet",
            "train a segmentation or detection model",
        )
    cfg.validate(model_config.tiling.region_size)
    ranks = setup(device)
    seed_everything(cfg.seed)
    if device.startswith("cuda") and ranks.world > 1:
        device = f"cuda:{ranks.local_rank}"
    dev = torch.device(device)
    model = create_model(model_config).to(dev).train()
    broadcast_parameters(model, ranks)
    if cfg.grad_checkpointing and hasattr(model.region_encoder.backbone, "set_grad_checkpointing"):
        model.region_encoder.backbone.set_grad_checkpointing(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    state_path = out.with_name(out.name + ".trainstate.pt")
    start_step = 0
    rng = np.random.default_rng(cfg.seed + 1000 * ranks.rank)  # each rank its own crops
    if resume and out.exists() and state_path.exists():
        saved_config, _ = read_checkpoint_config(out)
        if saved_config != model_config:
            raise ConfigError(
                f"{out} was trained with another model config",
                "resume with the same config, or write to a new --out",
            )
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(out), device=str(dev)))
        saved = torch.load(state_path, map_location=dev, weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        start_step = int(saved["step"])
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])

    val_rng = np.random.default_rng(cfg.seed + 1)
    val_batches = (
        [
            _batch(val_pairs, cfg, val_rng, dev, model_config)
            for _ in range(max(1, cfg.val_crops // cfg.batch_size))
        ]
        if val_pairs
        else []
    )
    weights = torch.tensor(cfg.class_weights, device=dev) if cfg.class_weights else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    started = time.perf_counter()
    r = model_config.tiling.region_size
    for step in range(start_step, cfg.max_steps):
        crops, masks, content = _batch(train_pairs, cfg, rng, dev, model_config)
        pixels, rc = crops_to_regions(crops, r)
        rc = rc + torch.from_numpy(rng.integers(0, cfg.position_jitter + 1, 2)).to(rc)
        valid = content_to_tokens(content, model)
        with autocast:
            outputs = forward_crops(model, pixels, rc, valid, cfg.truncate_context)
            loss = _loss(model, outputs, masks, cfg, weights)
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
            schedule.get_last_lr()[0],
            time.perf_counter() - started,
        )
        if (done % cfg.val_every == 0 or done == cfg.max_steps) and not ranks.main:
            barrier(ranks)  # wait for rank 0's validation and checkpoint
        elif done % cfg.val_every == 0 or done == cfg.max_steps:
            event.val = evaluate(model, val_batches, cfg) if val_batches else None
            save_checkpoint(
                model, out, extra={"step": done, "train": cfg.to_dict(), "val": event.val}
            )
            tmp = state_path.with_name(state_path.name + ".partial")
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "step": done,
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                },
                tmp,
            )
            os.replace(tmp, state_path)
            event.checkpoint = str(out)
            barrier(ranks)
        yield event
