"""Collectives that are no-ops in one process.

Decisions that must agree across ranks (skip a step with a non-finite loss, refuse a
checkpoint) go through :func:`any_rank`, so every rank takes the same branch. Its flag is
reduced on the device the process group's backend works on (the rank's GPU under NCCL,
the CPU under gloo: :func:`avblocks.device.collective_device`).
"""

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from avblocks.device import collective_device

__all__ = [
    "all_reduce_mean",
    "any_rank",
    "average_gradients",
    "barrier",
    "full",
    "gather_objects",
]


def full(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (e.g. the gradient norm under FSDP2); other tensors unchanged."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (a detached copy; ``value`` itself in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value.detach()
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on at least one (so all ranks decide alike)."""
    if not (dist.is_available() and dist.is_initialized()):
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=collective_device(dist.get_backend()))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_gradients(module: nn.Module) -> None:
    """All-reduce-mean the gradients of a module that is not wrapped (e.g. a discriminator)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` in rank order (``[value]`` in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out
