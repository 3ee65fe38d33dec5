"""Where this process stands among the ranks: the process group, its context and its seed.

- **Process group from the environment.** :func:`init_distributed` reads what ``torchrun`` sets
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Without those
  variables (or with ``WORLD_SIZE=1``) it creates no process group and every helper of
  :mod:`recipes.common.distributed` is the identity, so a single-process run takes exactly the
  code path it took before.
- **One device per rank.** The context carries the device this rank computes on
  (``run.device`` resolved by :func:`avblocks.device.resolve_device`: ``cuda:LOCAL_RANK``
  under ``torchrun`` on a GPU machine). The backend follows it: NCCL for CUDA devices (the
  rank's GPU is bound to the group, so collectives and barriers use it), gloo for the CPU
  (the CPU tests use gloo), whatever else the machine has.
- **Per-rank seeding.** Models are built from the same seed on every rank (DDP also
  broadcasts rank 0's parameters; FSDP2 shards the local copy, so identical construction
  matters there). After building, each rank reseeds with :func:`rank_seed`, so random draws
  inside the step (noise, timesteps, dropout) differ across ranks instead of repeating the
  same noise ``W`` times (rank 0 reseeds with ``seed`` itself). A one-process run never
  reseeds, so its numbers are those of the trainers before distributed support.
- **Rank 0 writes.** Logs, configs, exported models and single-file checkpoints are written by
  rank 0 only (:attr:`DistContext.is_main`); DDP keeps every rank's replica identical, so
  rank 0's state is the state.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from avblocks.device import HOST, is_cuda, process_group_backend

__all__ = ["DistContext", "destroy_distributed", "init_distributed", "rank_seed"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the number of ranks, its local index, and the
    device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = HOST

    @property
    def enabled(self) -> bool:
        """True when a process group with more than one rank is running."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes single-file outputs."""
        return self.rank == 0


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name} ({value!r}) must be an integer") from e


def init_distributed(backend: str | None = None, *, device: torch.device = HOST,
                     timeout_s: float = 600.0) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment, if any, with this
    rank computing on ``device``.

    Returns the context; with no ``WORLD_SIZE`` (or ``WORLD_SIZE=1``) no group is created.
    Calling it again when a group already exists returns that group's context. ``backend``
    defaults to :func:`avblocks.device.process_group_backend` of ``device``.
    """
    device = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _int_env("LOCAL_RANK", 0), device)
    world = _int_env("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=device)
    rank, local = _int_env("RANK", 0), _int_env("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK ({rank}) must lie in [0, WORLD_SIZE={world})")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"WORLD_SIZE is {world} but {name} is not set (launch with torchrun)")
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    backend = backend or process_group_backend(device)
    bound = {}
    if is_cuda(device):  # this rank's GPU: NCCL's communicator and barriers use it
        torch.cuda.set_device(device)
        bound = {"device_id": device}
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s),
                            **bound)
    return DistContext(rank, world, local, device)


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` itself on rank 0.

    Other ranks are offset by a large prime so that ``(seed, rank)`` pairs of nearby seeds do
    not share a stream (``seed=1, rank=0`` vs ``seed=0, rank=1`` would under ``seed + rank``).
    """
    if rank < 0:
        raise ValueError(f"rank ({rank}) must be >= 0")
    return seed + 1_000_003 * rank

