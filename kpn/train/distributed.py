"""Data-parallel training under torchrun: this process's rank, and what the ranks agree on.

``torchrun --nproc_per_node N train.py ...`` starts N processes that each draw their own
tiles; DistributedDataParallel averages their gradients, so every rank holds the same
weights after every step. Only rank 0 validates and writes. Without torchrun a process
is rank 0 of 1 and nothing here talks to another process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(0, 1)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world)


def end_distributed(ranks: Distributed) -> None:
    """Leave the process group :func:`start_distributed` joined, once every rank is done:
    a rank that tears gloo down while another still writes its run aborted the other in
    about one run in ten (terminate called without an active exception)."""
    if ranks.world > 1:
        dist.barrier()
        dist.destroy_process_group()


def all_mean(value: Tensor, ranks: Distributed) -> Tensor:
    """Mean of a scalar over all ranks (itself on one)."""
    if ranks.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= ranks.world
    return value


def any_rank(flag: bool, ranks: Distributed, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank; every rank gets the same answer."""
    if ranks.world == 1:
        return flag
    found = torch.tensor([float(flag)], device=device)
    dist.all_reduce(found, op=dist.ReduceOp.MAX)
    return bool(found.item())
