"""The model as data parallelism sees it: wrapped (DDP, FSDP2), unwrapped, synced, gathered.

- **Gradient sync only on the last micro-batch** (:func:`gradient_sync`: DDP ``no_sync``,
  FSDP2 ``set_requires_gradient_sync(False)``), so accumulation costs one all-reduce per step.
- **FSDP2 units** (:func:`wrap_model` ``shard=``) must be modules whose outputs are tensors or
  tuples of them: FSDP2 finds outputs through pytrees to hook the backward all-gather, and a
  dataclass output (e.g. ``TriPlane``) hides them, which fails in backward with
  ``setStorage ... out of bounds for storage of size 0``.
- **Every rank on its own device.** The model must already sit on the rank's device
  (``ctx.device``) when it is wrapped. DDP gets ``device_ids=[i]`` only for a module on
  ``cuda:i`` (for a CPU module DDP refuses device ids); FSDP2 shards over a 1-D mesh of the
  rank's device type (not the machine's default accelerator, so a CPU run on a GPU machine
  stays on the CPU) and, with ``precision="bf16"``, computes in bf16 with float32 gradient
  reduction (``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)``; the
  sharded master weights and the optimizer stay float32). :func:`ddp_arguments` and
  :func:`fsdp_plan` decide these, so the decisions are tested without a GPU.
"""

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from avblocks.device import is_cuda
from recipes.common.distributed.process_group import DistContext

__all__ = ["FSDPPlan", "Strategy", "ddp_arguments", "fsdp_plan", "full_model_state", "gradient_sync",
           "is_fsdp", "unwrap", "wrap_model"]

Strategy = Literal["ddp", "fsdp"]


def _model_device(model: nn.Module, ctx: DistContext) -> torch.device:
    """The device of ``model``'s parameters; they must all be on ``ctx.device``."""
    found = {p.device for p in model.parameters()} | {b.device for b in model.buffers()}
    if found and found != {ctx.device}:
        raise ValueError(f"rank {ctx.rank} computes on {ctx.device}, but the model's tensors are on "
                         f"{sorted(map(str, found))}: move the model there before wrapping it")
    return ctx.device


def ddp_arguments(model_device: torch.device) -> dict[str, Any]:
    """DDP's device arguments for a module on ``model_device``: its GPU index for a CUDA
    module, none for a CPU module (DDP rejects ``device_ids`` there)."""
    if not is_cuda(model_device) or model_device.index is None:
        return {"device_ids": None, "output_device": None}
    return {"device_ids": [model_device.index], "output_device": model_device.index}


@dataclass(frozen=True)
class FSDPPlan:
    """How :func:`wrap_model` shards: the mesh's device type, and the mixed-precision policy's
    dtypes (None: no policy, compute in the parameters' dtype)."""

    mesh_device_type: str
    world_size: int
    param_dtype: torch.dtype | None = None
    reduce_dtype: torch.dtype | None = None


def fsdp_plan(ctx: DistContext, precision: str = "fp32") -> FSDPPlan:
    """The FSDP2 plan of this rank: a 1-D mesh on ``ctx.device``'s type, and for ``bf16`` a
    bf16-compute / float32-reduce policy (fp32 and fp16 shard without a policy)."""
    if precision == "bf16":
        return FSDPPlan(ctx.device.type, ctx.world_size, torch.bfloat16, torch.float32)
    return FSDPPlan(ctx.device.type, ctx.world_size)


def _fully_shard_arguments(plan: FSDPPlan) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    arguments: dict[str, Any] = {"mesh": init_device_mesh(plan.mesh_device_type, (plan.world_size,))}
    if plan.param_dtype is not None:
        arguments["mp_policy"] = MixedPrecisionPolicy(param_dtype=plan.param_dtype,
                                                      reduce_dtype=plan.reduce_dtype)
    return arguments


def wrap_model(
    model: nn.Module,
    ctx: DistContext,
    strategy: Strategy = "ddp",
    *,
    shard: Sequence[type[nn.Module]] = (),
    find_unused_parameters: bool = False,
    precision: str = "fp32",
) -> nn.Module:
    """Wrap ``model`` (already on ``ctx.device``) for data parallelism; the identity in a
    single process.

    ``ddp``: :class:`~torch.nn.parallel.DistributedDataParallel` (returns the wrapper; use
    :func:`unwrap` to reach the model). ``fsdp``: FSDP2 ``fully_shard`` applied to every
    sub-module whose type is in ``shard`` (e.g. the transformer block class), then to the
    root; the model is sharded in place and returned (it is its own wrapper). ``precision``
    (``optim.precision``) picks FSDP2's mixed-precision policy (:func:`fsdp_plan`).
    """
    if not ctx.enabled:
        return model
    device = _model_device(model, ctx)
    if strategy == "ddp":
        return nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=find_unused_parameters, **ddp_arguments(device)
        )
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        arguments = _fully_shard_arguments(fsdp_plan(ctx, precision))
        kinds = tuple(shard)
        if kinds:
            for module in list(model.modules())[1:]:
                if isinstance(module, kinds):
                    fully_shard(module, **arguments)
        fully_shard(model, **arguments)
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
