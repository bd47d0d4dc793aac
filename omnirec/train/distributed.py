"""Multi-process training with PyTorch's own engine: processes launched by `torchrun` (one per GPU, or
several on a CPU), the process group created from torchrun's environment, gradients averaged by
`DistributedDataParallel`. gloo on CPU, NCCL on CUDA. Outside torchrun nothing here does anything.

    torchrun --nproc_per_node 2 -m omnirec.cli train --config shop.toml          # one machine
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_endpoint host:29500 -m omnirec.cli train ...

>>> rank_and_size()
(0, 1)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """This process's place: rank, world size, and the device it trains on."""

    rank: int
    size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True inside a torchrun launch of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto") -> Group | None:
    """Join (creating once) the process group torchrun describes; None for a single process."""
    if not launched() and not (dist.is_available() and dist.is_initialized()):
        return None
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and device in ("auto", "cuda"):
        torch.cuda.set_device(local)
        where = torch.device("cuda", local)
    else:
        where = torch.device("cpu")
    return Group(dist.get_rank(), dist.get_world_size(), where)


def rank_and_size() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank_and_size()[0] == 0


def from_main(value: float, group: Group | None) -> float:
    """Rank 0's `value` on every rank (validation metrics, stop decisions: all ranks must agree)."""
    if group is None:
        return value
    device = group.device if group.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def barrier(group: Group | None) -> None:
    """Wait for every rank (after rank 0 wrote a checkpoint, say)."""
    if group is not None:
        dist.barrier()
