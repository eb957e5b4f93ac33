"""torch.distributed for one run on several processes (torchrun), and its single-process fallback.

    torchrun --nproc_per_node 4 run.py task=iwslt optimizer=radam hydra.run.dir=runs/iwslt_radam

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without them the run is a plain
single process. Under Hydra's submitit launchers with tasks_per_node (and nodes) > 1, every task runs the job and
submitit's environment (SLURM's, or its local executor's) is exported into those variables first. Backend: NCCL
on CUDA, gloo on CPU. Only rank 0 writes records and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def export_launcher_env() -> None:
    """In a multi-task submitit job, export RANK, WORLD_SIZE, MASTER_* from submitit's environment (once)."""
    if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:  # one process per task (GPU): RANK, WORLD_SIZE, MASTER_*
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def is_main_process() -> bool:
    """Rank 0 of the run (before the process group exists): the process that writes records and checkpoints."""
    export_launcher_env()
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_type: str) -> Dist:
    """Join the process group torchrun (or a multi-task submitit job) describes (a no-op for one process)."""
    export_launcher_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float] | torch.Tensor, d: Dist, device: torch.device) -> list[float]:
    """Sum floats (a list, or a 1-d tensor: reduced in place) over all ranks, in float64 so token counts stay
    exact; returns them as floats."""
    if not d.enabled and not torch.is_tensor(values):
        return list(values)
    t = torch.as_tensor(values, dtype=torch.float64, device=device)
    if d.enabled:
        dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (used for stop signals)."""
    return all_reduce_sum([float(flag)], d, device)[0] > 0


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
