"""Data-parallel training over torch.distributed, for processes started by torchrun.

The global batch (the loader's batch_size, i.e. train.batch_size) is split into equal
contiguous shards, one per process, so the schedules and results mean what they mean in
one process. Every update then matches the single-process update of the global batch:

  noise     every rank draws the noise of the whole global batch from the same generator
            and keeps its own rows, so the generator state is identical on all ranks and
            the one state in rank 0's checkpoint serves them all;
  loss      each rank's loss is the mean over its shard; with equal shards the average of
            those means is the global mean, so gradients are averaged (sum / world);
  skips     the loss and batch-mean KL that decide a skip are averaged with the gradients
            (one collective), and the clip sees the averaged gradient, so every rank
            reaches the same verdict: no rank steps while another skips;
  logging   the device accumulators are summed over ranks before each read;
  validation  rank 0 validates and broadcasts the figures, so every rank halves the
            learning rate and picks the best model alike.

Only the torch RNG (dropout) differs per rank: its states are gathered into the checkpoint
so a resumed run continues each rank's stream.

Ranks die with their agent: torchrun starts them in sessions of their own, so a SIGKILL of
the agent (the stage process DVC waits on) reaches none of them, and an orphan would either
finish and write the stage's output after the stage had failed, or wait out TIMEOUT in a
rendezvous nobody hosts. Each rank asks the kernel for SIGKILL when its parent dies.
Torch, numpy and the standard library only.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from .errors import UserError
from .parent import die_with_parent

# rank 0 validates alone while the others wait in a broadcast: allow a long validation
TIMEOUT = timedelta(hours=2)
AGENT_PID_ENV = "ZF_TORCHRUN_AGENT_PID"  # set by exec_torchrun: the pid the ranks' parent has


class DistributedError(UserError):
    """Settings that cannot run data-parallel (batch split, checkpoint visibility)."""


def world_size_from_env() -> int:
    """The world size torchrun announced (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def launch_command(nproc: int, module: str, argv: list[str], python: str) -> list[str]:
    """The command that re-runs `python -m module argv` as nproc processes on this machine
    (torchrun's standalone mode: a private rendezvous on a free local port)."""
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(nproc), "-m", module, *argv]


def exec_torchrun(nproc: int, module: str, argv: list[str], env: dict[str, str]):
    """Replace this process by torchrun running `python -m module argv` as nproc ranks.
    exec keeps the pid (DVC's signals reach torchrun, locks held here stay held), and the
    ranks learn it: the parent they must die with."""
    cmd = launch_command(nproc, module, argv, sys.executable)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, {**env, AGENT_PID_ENV: str(os.getpid())})


def die_with_agent() -> None:
    """SIGKILL this rank when its parent, torchrun's agent, dies; exit at once if it already
    has."""
    agent = int(os.environ.get(AGENT_PID_ENV) or os.getppid())
    if not die_with_parent(agent):
        print(f"rank {os.environ.get('RANK', '?')}: its torchrun agent (pid {agent}) has died; "
              "stopping", file=sys.stderr, flush=True)
        os._exit(1)  # no clean-up: an orphan must not write anything


@dataclass
class DataParallel:
    """This process's place in the group, and the few collectives training needs."""
    rank: int
    world: int
    host_group: object = None  # gloo group for host-side values (None: the default group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- data ---------------------------------------------------------------------------------
    def shard(self, loader) -> "ShardLoader":
        return ShardLoader(loader, self.rank, self.world)

    def noise(self, model, shard, generator: torch.Generator):
        """This rank's rows of the noise one process would draw for the global batch."""
        shape = model.noise_shape(shard)
        if shape is None:
            return None
        # padded layouts trim each batch to its longest sequence: the global batch is as
        # long as the longest shard, and the draw's layout depends on that length
        steps = torch.tensor([shape[1]], dtype=torch.int64)
        dist.all_reduce(steps, op=dist.ReduceOp.MAX, group=self.host_group)
        return shard_noise(shape, int(steps), self.rank, self.world, generator, shard.mask.device)

    # -- gradients and counters -------------------------------------------------------------
    def average_grads(self, params, *scalars: torch.Tensor) -> list[torch.Tensor]:
        """Average the gradients of `params` and the given scalars over ranks in one
        all-reduce; returns the averaged scalars. Parameters without a gradient are left
        out: which ones have none depends on the model and settings, the same on every rank."""
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads]
                         + [torch.stack(scalars).to(grads[0].dtype).reshape(-1)])
        dist.all_reduce(flat)
        flat.div_(self.world)  # gloo has no AVG
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n
        return list(flat[offset:].unbind())

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks."""
        dist.all_reduce(t)
        return t

    def broadcast_(self, tensors) -> None:
        """Overwrite `tensors` with rank 0's values."""
        for t in tensors:
            dist.broadcast(t, 0)

    # -- host-side agreement ----------------------------------------------------------------
    def broadcast_floats(self, values: list[float] | None, n: int) -> list[float]:
        """Rank 0's `values` (n floats) on every rank."""
        t = torch.tensor(values if self.is_main else [0.0] * n, dtype=torch.float64)
        dist.broadcast(t, 0, group=self.host_group)
        return t.tolist()

    def gather_bytes(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's uint8 tensor of a common size (RNG states), in rank order."""
        t = t.cpu()
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.host_group)
        return out

    def gather_flags(self, flag: bool) -> list[bool]:
        out = self.gather_bytes(torch.tensor([int(flag)], dtype=torch.uint8))
        return [bool(t) for t in out]

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def shard_noise(shape, steps: int, rank: int, world: int, generator: torch.Generator,
                device) -> torch.Tensor:
    """Rows [rank*b, (rank+1)*b) and the first shape[1] steps of a (b*world, steps, ...)
    standard-normal draw: what one process drawing for the whole batch gives these rows."""
    b = shape[0]
    full = torch.randn((b * world, steps, *shape[2:]), generator=generator, device=device)
    return full[rank * b:(rank + 1) * b, :shape[1]].contiguous()


class ShardLoader:
    """The rank's contiguous share of each global batch of a loader addressed by
    (epoch, index); it reads only its own rows."""

    def __init__(self, loader, rank: int, world: int):
        b = loader.batch_size
        if b % world:
            raise DistributedError(
                f"train.batch_size={b} does not split over {world} processes (train.nproc, or "
                f"torchrun's nodes x processes per node): use a multiple of {world}")
        if not loader.drop_last and loader.num_sequences % b:
            raise ValueError("data-parallel training needs whole batches: open the training "
                             "loader with drop_last=True")
        self.loader, self.rank, self.world = loader, rank, world
        self.batch_size = b // world
        self.num_batches = loader.num_batches

    def batch(self, epoch: int, index: int):
        b = self.batch_size
        ids = self.loader.ids(epoch, index)[self.rank * b:(self.rank + 1) * b]
        return self.loader._gather(ids)  # the loaders' one way to read given sequences


def from_env(device) -> DataParallel | None:
    """Join the process group torchrun set up (NCCL for CUDA, gloo on CPU); None when this
    process runs alone."""
    world = world_size_from_env()
    if world <= 1:
        return None
    die_with_agent()  # before the rendezvous: an orphan would wait there for TIMEOUT
    device = torch.device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=TIMEOUT, **kw)
    host = dist.new_group(backend="gloo") if dist.get_backend() == "nccl" else None
    return DataParallel(rank=dist.get_rank(), world=dist.get_world_size(), host_group=host)


def rank_seed(seed: int, rank: int) -> int:
    """The torch RNG seed of a rank: rank 0 keeps `seed` (so one process is unchanged), the
    others get independent streams (dropout masks must not repeat across shards)."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)
