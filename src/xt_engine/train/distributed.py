"""Data-parallel training under ``torchrun``: one process per GPU (or CPU, with gloo).

Each rank samples its own crops (seeded by rank), gradients are averaged across ranks after every
backward pass (what ``DistributedDataParallel`` does; done by hand because xT's context runs
several forward calls per step, chunk by chunk, which DDP's one-forward-per-backward hooks do not
allow), rank 0 validates and writes checkpoints. A single process needs none of this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Ranks:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def broadcast_parameters(model: nn.Module, ranks: Ranks) -> None:
    """Every rank starts from rank 0's weights."""
    if ranks.world > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(model: nn.Module, ranks: Ranks) -> None:
    """Mean of every parameter's gradient over the ranks (in place)."""
    if ranks.world <= 1:
        return
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad /= ranks.world


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()
