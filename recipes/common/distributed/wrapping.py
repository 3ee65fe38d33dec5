"""The model as data parallelism sees it: wrapped (DDP, FSDP2), unwrapped, synced, gathered.

- **Gradient sync only on the last micro-batch** (:func:`gradient_sync`: DDP ``no_sync``,
  FSDP2 ``set_requires_gradient_sync(False)``), so accumulation costs one all-reduce per step.
- **FSDP2 units** (:func:`wrap_model` ``shard=``) must be modules whose outputs are tensors or
  tuples of them: FSDP2 finds outputs through pytrees to hook the backward all-gather, and a
  dataclass output (e.g. ``TriPlane``) hides them, which fails in backward with
  ``setStorage ... out of bounds for storage of size 0``.
"""

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import nn

from recipes.common.distributed.process_group import DistContext

__all__ = ["Strategy", "full_model_state", "gradient_sync", "is_fsdp", "unwrap", "wrap_model"]

Strategy = Literal["ddp", "fsdp"]


def wrap_model(
    model: nn.Module,
    ctx: DistContext,
    strategy: Strategy = "ddp",
    *,
    shard: Sequence[type[nn.Module]] = (),
    find_unused_parameters: bool = False,
) -> nn.Module:
    """Wrap ``model`` for data parallelism; the identity in a single process.

    ``ddp``: :class:`~torch.nn.parallel.DistributedDataParallel` (returns the wrapper; use
    :func:`unwrap` to reach the model). ``fsdp``: FSDP2 ``fully_shard`` applied to every
    sub-module whose type is in ``shard`` (e.g. the transformer block class), then to the
    root; the model is sharded in place and returned (it is its own wrapper).
    """
    if not ctx.enabled:
        return model
    if strategy == "ddp":
        device_ids = [ctx.local_rank] if torch.cuda.is_available() else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        kinds = tuple(shard)
        if kinds:
            for module in list(model.modules())[1:]:
                if isinstance(module, kinds):
                    fully_shard(module)
        fully_shard(model)
        return model
    raise ValueError(f"strategy ({strategy!r}) must be 'ddp' or 'fsdp'")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 modules are their own wrapper)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Inside: backward passes all-reduce gradients only if ``enabled`` (last micro-batch)."""
    if enabled:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif is_fsdp(model):
        model.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)  # type: ignore[operator]
    else:
        yield


def full_model_state(model: nn.Module, *, rank0_only: bool = False) -> dict[str, torch.Tensor]:
    """The full (unsharded) CPU state dict of a possibly FSDP2/DDP-wrapped model.

    Collective under FSDP2 (every rank must call it). ``rank0_only``: gather into rank 0's CPU
    memory only (tensor by tensor; the other ranks get ``{}``), which is what an export of a
    model too big for one device needs; otherwise every rank gets the full state.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    model = unwrap(model)
    if not is_fsdp(model):
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=rank0_only)
    state = get_model_state_dict(model, options=options)
    return {k: v.detach().cpu().clone() for k, v in state.items()}
