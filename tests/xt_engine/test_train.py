from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from xt_engine import ConfigError, InputError, load_checkpoint
from xt_engine.cli import main
from xt_engine.synthetic import make_sar_scene
from xt_engine.train.data import find_pairs, load_pairs, sample_crop, split_pairs
from xt_engine.train.losses import focal_heatmap_loss, segmentation_loss
from xt_engine.train.metrics import confusion, scores
from xt_engine.train.trainer import crops_to_regions, masks_to_regions

TINY_CONFIG = {
    "tiling": {"region_size": 64},
    "region_encoder": {"name": "test_convnext", "in_chans": 1},
    "context_encoder": {"kind": "transformer_xl", "dim": 32, "depth": 1, "chunk_regions": 2},
    "head": {"task": "segmentation", "num_classes": 4},
    "train": {
        "crop_size": 128,
        "batch_size": 2,
        "max_steps": 4,
        "val_every": 2,
        "val_crops": 2,
        "lr": 1e-3,
    },
}


@pytest.fixture
def data_dirs(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(3):
        image, mask = make_sar_scene((200, 260), seed=i, num_vessels=6, near_shore_px=40)
        tifffile.imwrite(images / f"s{i}.tif", image)
        tifffile.imwrite(masks / f"s{i}.tif", mask)
    return images, masks


def test_crops_and_masks_split_into_matching_regions() -> None:
    crops = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    regions, rc = crops_to_regions(crops, 4)
    masks = masks_to_regions(crops[:, 0].long(), 4)
    assert regions.shape == (2, 4, 1, 4, 4) and rc.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    torch.testing.assert_close(regions[1, 2, 0], crops[1, 0, 4:, :4])
    torch.testing.assert_close(masks[6].float(), crops[1, 0, 4:, :4])  # batch 1, region 2


def test_crop_sampling_pads_with_ignore_and_centres_positives(data_dirs: tuple[Path, Path]) -> None:
    pairs = load_pairs(find_pairs(*data_dirs, None), 4, seed=0)
    rng = np.random.default_rng(0)
    image, mask = sample_crop(pairs[0], 256, positive=True, rng=rng)  # larger than the image
    assert image.shape == (1, 256, 256) and mask.shape == (256, 256)
    assert (mask == -1).sum() == 256 * 256 - 200 * 256  # rows past the 200 px image
    hits = 0
    for _ in range(20):
        _, mask = sample_crop(pairs[0], 64, positive=True, rng=rng)
        hits += bool((mask >= 1).any())
    assert hits >= 15


def test_single_image_is_split_by_rows(data_dirs: tuple[Path, Path]) -> None:
    pairs = load_pairs(find_pairs(*data_dirs, None)[:1], 4, seed=0)
    train_pairs, val_pairs = split_pairs(pairs, 0.25)
    assert train_pairs[0].image.shape_yx(0) == (150, 260)
    assert val_pairs[0].image.shape_yx(0) == (50, 260)
    full = pairs[0].image.read(0, 150, 0, 200, 260)
    np.testing.assert_array_equal(val_pairs[0].image.read(0, 0, 0, 50, 260), full)


def test_losses_and_metrics() -> None:
    target = torch.tensor([[[0, 1], [2, -1]]])
    perfect = torch.full((1, 3, 2, 2), -20.0)
    for y, x, c in ((0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 0)):
        perfect[0, c, y, x] = 20.0
    assert segmentation_loss(perfect, target) < 1e-3
    assert segmentation_loss(torch.zeros(1, 3, 2, 2), target) > 0.5
    matrix = confusion(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, -1]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    same = confusion(np.array([0, 1, 1, 2]), np.array([0, 1, 2, -1]), 3)  # numpy arrays too
    assert same.tolist() == matrix.tolist()
    result = scores(matrix)
    assert result["iou"][1] == pytest.approx(0.5) and result["f1"][2] == 0.0
    heat = torch.zeros(1, 1, 4, 4)
    heat[0, 0, 1, 1] = 1.0
    good, bad = torch.full((1, 1, 4, 4), -9.0), torch.full((1, 1, 4, 4), -9.0)
    good[0, 0, 1, 1] = 9.0
    assert focal_heatmap_loss(good, heat) < focal_heatmap_loss(bad, heat)


def test_xt_train_writes_a_checkpoint_that_infers_and_resumes(
    data_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(TINY_CONFIG))
    out = tmp_path / "model.safetensors"
    images, masks = data_dirs
    args = [
        "train",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--config",
        str(config),
        "--out",
        str(out),
        "--seed",
        "3",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "step 4" in printed and "val F1" in printed
    model = load_checkpoint(out)
    assert model.config.region_encoder.in_chans == 1
    first = {k: v.clone() for k, v in model.state_dict().items()}
    # same seed, same data: the same weights (deterministic on CPU)
    out2 = tmp_path / "again.safetensors"
    assert main([*args[:-3], str(out2), "--seed", "3"]) == 0
    again = load_checkpoint(out2).state_dict()
    for key, value in first.items():
        torch.testing.assert_close(again[key], value)
    # resume to 6 steps continues from step 4
    assert main([*args, "--resume", "--max-steps", "6"]) == 0
    assert "step 6" in capsys.readouterr().out


def test_train_errors_name_the_fix(tmp_path: Path, data_dirs: tuple[Path, Path]) -> None:
    with pytest.raises(InputError, match="no image in"):
        find_pairs(data_dirs[0], tmp_path, None)
    bad = dict(TINY_CONFIG, train={"crop_size": 100})
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="multiple of the region size"):
        main(
            [
                "--debug",
                "train",
                "--images",
                str(data_dirs[0]),
                "--masks",
                str(data_dirs[1]),
                "--config",
                str(config),
                "--out",
                str(tmp_path / "m.safetensors"),
            ]
        )


def _average_in_two_processes(rank: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    from xt_engine.train.distributed import Ranks, average_gradients, broadcast_parameters

    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=2)
    layer = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(layer.weight, float(rank))  # differs until broadcast
    ranks = Ranks(rank, 2, rank)
    broadcast_parameters(layer, ranks)
    layer.weight.grad = torch.full_like(layer.weight, float(rank + 1))
    average_gradients(layer, ranks)
    torch.save({"weight": layer.weight.detach(), "grad": layer.weight.grad}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_gradients_are_averaged_across_two_gloo_processes(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_average_in_two_processes, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert torch.equal(saved["weight"], torch.zeros(1, 2))  # rank 0's initial weights
        assert torch.equal(saved["grad"], torch.full((1, 2), 1.5))  # mean of 1 and 2


def test_torchrun_two_cpu_processes_train(data_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(dict(TINY_CONFIG, train={**TINY_CONFIG["train"], "max_steps": 2})))
    out = tmp_path / "ddp.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "xt_engine.cli",
        "train",
        "--images",
        str(data_dirs[0]),
        "--masks",
        str(data_dirs[1]),
        "--config",
        str(config),
        "--out",
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training in 2 process(es)" in result.stdout and "step 2" in result.stdout
    assert load_checkpoint(out).config.region_encoder.name == "test_convnext"


def test_demo_recipe_runs_for_a_few_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xt_engine.models.registry import model_config

    out = tmp_path / "demo.safetensors"
    assert main(["train", "--recipe", "demo-sar", "--out", str(out), "--max-steps", "2"]) == 0
    assert "step 2" in capsys.readouterr().out
    assert load_checkpoint(out).config == model_config("xt_demo_sar")  # the shipped architecture
    assert len(list((tmp_path / "demo-data" / "images").glob("*.tif"))) == 6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_with_bf16_autocast(data_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """On a GPU `xt train --device cuda` trains under bf16 autocast and writes a finite float32
    checkpoint that loads on the CPU."""
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps({**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "max_steps": 8}})
    )
    out = tmp_path / "gpu.safetensors"
    images, masks = data_dirs
    args = [
        "train",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--config",
        str(config),
        "--out",
        str(out),
        "--seed",
        "0",
        "--device",
        "cuda",
    ]
    assert main(args) == 0
    model = load_checkpoint(out)
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in model.parameters())


def test_mamba_a_log_and_d_are_trained_without_weight_decay(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """mamba-ssm marks ``A_log`` and ``D`` ``_no_weight_decay``; the trainer honours it, and
    models without such parameters keep one group (train states saved before still resume)."""
    from xt_engine.config import XTConfig
    from xt_engine.models import create_model
    from xt_engine.train.config import TrainConfig
    from xt_engine.train.state import load_state
    from xt_engine.train.trainer import parameter_groups, train

    spec = {k: v for k, v in TINY_CONFIG.items() if k != "train"}
    txl = create_model(spec)
    assert [g["weight_decay"] for g in parameter_groups(list(txl.parameters()), 0.05)] == [0.05]

    spec["context_encoder"] = {"kind": "mamba", "dim": 32, "depth": 2, "chunk_regions": 2}
    config = XTConfig.from_dict(spec)
    model = create_model(config)  # bidirectional by default: two stacks of two layers
    exempt = {n for n, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert len(exempt) == 8 and {n.rsplit(".", 1)[1] for n in exempt} == {"A_log", "D"}

    images, masks = data_dirs
    pairs = load_pairs(find_pairs(images, masks, None), 4, seed=0)
    out = tmp_path / "mamba.safetensors"
    cfg = TrainConfig.from_dict({**TINY_CONFIG["train"], "max_steps": 2, "val_every": 2})
    for _ in train(config, cfg, pairs, [], out):
        pass
    groups = load_state(out, torch.device("cpu"))["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [cfg.weight_decay, 0.0]
    assert len(groups[1]["params"]) == len(exempt)
