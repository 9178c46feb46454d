"""Multi-GPU / multi-node training through ``torchrun`` and DistributedDataParallel, the nanoGPT way.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in each worker's environment; their presence
switches DDP on (karpathy/nanoGPT ``train.py``). Rank 0 is the *main* process: it alone logs, shows progress
and writes checkpoints. One node with 4 GPUs, and two nodes with 4 GPUs each::

    torchrun --standalone --nproc_per_node=4 -m DCTNetLib train --data PREP --cdm CDM.pt --output RUN
    # node 0 (address 10.0.0.1):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 --master_addr=10.0.0.1 --master_port=29500 \\
        -m DCTNetLib train --data PREP --cdm CDM.pt --output RUN
    # node 1:
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=4 --master_addr=10.0.0.1 --master_port=29500 \\
        -m DCTNetLib train --data PREP --cdm CDM.pt --output RUN

Gradients are averaged over ranks, which equals one process taking the mean loss over the global batch
(``batch_size * world_size``). The backend is NCCL on CUDA and Gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "DistInfo",
    "detect",
    "init_distributed",
    "cleanup",
    "is_main",
    "barrier",
    "all_reduce_flag",
    "all_gather_objects",
    "broadcast_object",
    "unwrap",
    "ResumableSampler",
]

# Generous collective timeout: rank 0 validates and writes checkpoints while the others wait at a barrier.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Args:
        rank: global rank, 0 … world_size-1.
        local_rank: rank within the node (selects the GPU).
        world_size: number of processes.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when running under ``torchrun`` with a process group."""
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistInfo:
    """Rank information from ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` (single process when absent)."""
    if "RANK" not in os.environ:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def init_distributed(use_cuda: bool) -> DistInfo:
    """Create the process group when launched by ``torchrun``; a no-op for a single process.

    Args:
        use_cuda: pick NCCL and bind this process to GPU ``LOCAL_RANK``; otherwise Gloo on CPU.
    """
    info = detect()
    if "RANK" not in os.environ:
        return info
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return info


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on rank 0 and in a single-process run."""
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if _active():
        dist.barrier()


def all_reduce_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (used for stop requests)."""
    if not _active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` for one process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel (or DataParallel / compiled) wrapper."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile wrapper
        else:
            return model


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can start an epoch part-way, so a mid-epoch resume replays the same order.

    The order of epoch ``e`` is a permutation drawn from ``seed + e`` (DistributedSampler), identical for every
    world size, and rank ``r`` takes every ``world_size``-th index from ``r``: with a per-rank batch of ``b``,
    step ``s`` of a ``w``-rank run sees exactly the samples of step ``s`` of one process with batch ``w·b``.

    Args:
        dataset: the dataset to sample.
        info: rank information.
        shuffle: shuffle every epoch. Defaults to True.
        seed: base seed of the permutations. Defaults to 0.
    """

    def __init__(self, dataset: Dataset, info: DistInfo, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.skip = 0

    def set_position(self, samples_done: int) -> None:
        """Skip the first ``samples_done`` samples of this rank's share of the current epoch (once)."""
        if not 0 <= samples_done <= self.num_samples:
            raise ValueError(f"samples_done must be in [0, {self.num_samples}], got {samples_done}")
        self.skip = samples_done

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.skip:]
        self.skip = 0  # the next epoch starts from its beginning
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples - self.skip

    def state_dict(self) -> dict[str, int]:
        return {"seed": int(self.seed), "epoch": int(self.epoch), "world_size": int(self.num_replicas)}
