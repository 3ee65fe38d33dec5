"""What the three AV-DiT trainers share: the optimisation and run config sections, the
optimizer / schedule / EMA set-up, and the call into :func:`recipes.common.loop.fit`.

Each trainer (autoencoder, image-DiT pretraining, adapters) supplies its model, a
``micro_step(indices, step) -> {"total": loss, ...}`` and the number of training items;
:func:`train_module` does the rest exactly as ProAV-DiT's trainers do (the same loop): resume
from the newest atomic checkpoint, progress bar, EMA, gradient clipping and accumulation,
non-finite guard, ``log.jsonl``, ``run.max_minutes`` budget.

Choices:

- Only parameters with ``requires_grad`` go to the optimizer, and the EMA averages only
  those (``EMA(trainable_only=True)``): the frozen DiT is never touched by either, so it stays
  bit-identical. Checkpoints still hold the whole model state (the loop saves the model's
  ``state_dict``); for DiT-XL prefer :func:`avblocks.dit.adapters.save_adapters` on the
  exported model, which keeps the adapters alone.
- Distributed: ``torchrun`` + DDP only (``run.parallel = "ddp"``); FSDP is not wired for
  partly frozen models here.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from avblocks.config import ConfigError
from avblocks.diffusion.ema import EMA
from recipes.common import distributed as dist_utils
from recipes.common import loop
from recipes.common.loop import FitResult, fit, make_optimizer, step_batches


@dataclass
class OptimConfig(loop.OptimConfig):
    """:class:`recipes.common.loop.OptimConfig`; its defaults are AV-DiT's."""


@dataclass
class RunConfig(loop.RunConfig):
    """:class:`recipes.common.loop.RunConfig` with AV-DiT's output folder, and DDP only."""

    output_dir: str = "outputs/av_dit"
    parallel: Literal["ddp"] = "ddp"  # FSDP is not wired for partly frozen models (module doc)


def need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate_common(optim: OptimConfig, run: RunConfig, *, world_size: int = 1) -> None:
    """The constraints every trainer shares; the error names the fields."""
    for name, value in (("optim.steps", optim.steps), ("optim.batch_size", optim.batch_size),
                        ("optim.grad_accum", optim.grad_accum), ("run.log_every", run.log_every),
                        ("run.checkpoint_every", run.checkpoint_every),
                        ("run.keep_checkpoints", run.keep_checkpoints)):
        need(value >= 1, f"{name} ({value}) must be >= 1")
    need(optim.lr > 0, f"optim.lr ({optim.lr}) must be > 0")
    need(0.0 <= optim.ema_decay <= 1.0, f"optim.ema_decay ({optim.ema_decay}) must lie in [0, 1]")
    need(optim.batch_size % (world_size * optim.grad_accum) == 0,
         f"optim.batch_size ({optim.batch_size}) must be divisible by the number of ranks ({world_size}) "
         f"x optim.grad_accum ({optim.grad_accum})")


def train_module(model: torch.nn.Module, *, desc: str, out: Path, ctx: dist_utils.DistContext,
                 optim: OptimConfig, run: RunConfig, num_items: int, micro_step) -> tuple[FitResult, EMA]:
    """Optimise the trainable parameters of ``model`` with :func:`recipes.common.loop.fit`.

    ``micro_step(indices, step)`` gets this rank's item indices of one micro-batch. Returns the
    fit result and the EMA (copy it into the model before exporting).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{desc}: the model has no trainable parameters")
    net = dist_utils.wrap_model(model, ctx, run.parallel)
    if ctx.enabled:  # same init everywhere; from here each rank draws its own noise
        torch.manual_seed(dist_utils.rank_seed(run.seed, ctx.rank))
    ema = EMA(model, decay=optim.ema_decay, warmup=True, trainable_only=True)
    opt, sched = make_optimizer(trainable, optim)
    parts = {"model": model, "ema": ema, "optimizer": opt, "scheduler": sched}
    fitted = fit(desc=desc, out=out, ctx=ctx, run=run, optim=optim, parts=parts, net=net,
                 batches=step_batches(num_items, optim, run.seed, ctx), micro_step=lambda index, step: micro_step(index, step, net))
    return fitted, ema

