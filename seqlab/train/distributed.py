"""Data parallelism under torch's own launcher (``torchrun``).

``torchrun --nproc_per_node N -m seqlab.cli train ...`` sets RANK, WORLD_SIZE
and LOCAL_RANK; the trainer then wraps the model in DistributedDataParallel
(gloo on CPU, NCCL on GPU) and each process takes its share of every global
batch, so N processes follow the same trajectory as one process with the
same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device_kind: str) -> DistInfo:
    """Join the process group if launched by torchrun; a no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    if device_kind == "cpu":
        # Share the cores instead of every process spawning a thread per core.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return info


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_true(flags: list[bool], info: DistInfo, device="cpu") -> list[bool]:
    """Each flag set if it is set in any process (so all processes decide alike)."""
    if not info.enabled:
        return flags
    t = torch.tensor([int(f) for f in flags], device=device)  # NCCL needs it on the GPU
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
