"""Distributed data-parallel training under torchrun, switched on by its environment.

As in torchvision's reference scripts, ``torchrun --nproc_per_node N -m facegender train ...``
sets RANK, WORLD_SIZE and LOCAL_RANK; the trainer then joins the process group (gloo on CPU,
nccl when CUDA is there, one GPU per local rank), wraps the model in DDP and draws each rank's
share of one seeded stream (training/sampling.py). Rank 0 alone prints, logs and writes the
checkpoint and the model folder. Without those variables (or with one process) nothing here
changes what a single process does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..errors import FaceGenderError, require

torch = require("torch")

# Rank 0 alone computes a teacher's probabilities or finishes the model folder while the others
# wait at a barrier: far longer than torch's default 10 minutes on a large distillation set.
TIMEOUT = timedelta(minutes=float(os.environ.get("FACEGENDER_DIST_TIMEOUT_MIN", 180)))


@dataclass
class Dist:
    """This process's place in the job: rank of world, its device, whether it set up the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_agree(self, flag: bool) -> bool:
        """True only when `flag` is true on every rank (one tiny all-reduce)."""
        if not self.active:
            return flag
        t = torch.tensor([1 if flag else 0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return bool(t.item())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over the ranks (float64)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.cpu().tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (picklable objects)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def wrap(self, model):
        """The model as DDP sees it (the plain module in one process). DDP broadcasts rank 0's
        parameters and buffers at construction, so every rank starts from the same weights."""
        if not self.active:
            return model
        ids = [self.local_rank] if self.device.startswith("cuda") else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def from_env(env: dict[str, str] | None = None) -> Dist:
    """Join torchrun's process group when its variables say there are several processes."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in env:
        return Dist()
    rank, local = int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_available():
        raise FaceGenderError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    cuda = torch.cuda.is_available()
    if cuda:
        if local >= torch.cuda.device_count():
            raise FaceGenderError(f"local rank {local} has no GPU ({torch.cuda.device_count()} "
                                  "visible): start at most that many processes per node")
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    owns = not torch.distributed.is_initialized()
    if owns:
        torch.distributed.init_process_group(backend, timeout=TIMEOUT)
    return Dist(rank, world, local, f"cuda:{local}" if cuda else "cpu", backend, owns)
