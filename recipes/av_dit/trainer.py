"""What the three AV-DiT trainers share: the optimizer / schedule / EMA set-up and the call
into :func:`recipes.common.loop.fit`, and the frozen DiT's DDPM objective.

Each trainer (autoencoder, image-DiT pretraining, adapters) supplies its model, a
``micro_step(batch, step, net) -> {"total": loss, ...}`` and its training rows (tensors in
host memory: encoded latents, rendered images, labels), which a step loader gathers into
this rank's batches (``data.num_workers`` workers, pinned for a GPU) and the loop moves to
``ctx.device``;
:func:`train_module` does the rest exactly as every recipe's trainer does (the same loop):
resume from the newest atomic checkpoint, progress bar, EMA, gradient clipping and
accumulation, non-finite guard, ``log.jsonl``, ``run.max_minutes`` budget.

Choices:

- Only parameters with ``requires_grad`` go to the optimizer, and the EMA averages only
  those (``EMA(trainable_only=True)``): the frozen DiT is never touched by either, so it stays
  bit-identical. Checkpoints still hold the whole model state (the loop saves the model's
  ``state_dict``); for DiT-XL prefer :func:`avblocks.dit.adapter_io.save_adapters` on the
  exported model, which keeps the adapters alone.
- Distributed: ``torchrun`` + DDP only (``run.parallel = "ddp"``); FSDP is not wired for
  partly frozen models here.
- Device and speed: the model moves to ``ctx.device`` before its EMA and optimizer exist;
  the model section's speed fields (:mod:`recipes.common.speed`) apply before wrapping.
"""

from pathlib import Path

import torch

from avblocks.diffusion import DDPM
from avblocks.diffusion.ema import EMA
from recipes.av_dit.config import DDPMConfig, RunConfig
from recipes.common import distributed as dist_utils
from recipes.common.latent_cache import RowsDataset
from recipes.common.loading import step_loader
from recipes.common.loop import FitResult, OptimConfig, fit, make_optimizer
from recipes.common.speed import SpeedConfig, apply_speed, attention


def build_ddpm(cfg: DDPMConfig) -> DDPM:
    """DiT's objective: epsilon prediction under ``cfg``'s schedule."""
    return DDPM(schedule=cfg.schedule, num_timesteps=cfg.num_timesteps, prediction="epsilon")


def train_module(model: torch.nn.Module, *, desc: str, out: Path, ctx: dist_utils.DistContext,
                 optim: OptimConfig, run: RunConfig, rows: dict[str, torch.Tensor], micro_step,
                 speed: SpeedConfig, num_workers: int = 0) -> tuple[FitResult, EMA]:
    """Optimise the trainable parameters of ``model`` with :func:`recipes.common.loop.fit`.

    ``micro_step(batch, step, net)`` gets this rank's micro-batch of ``rows`` (a dict of the
    same keys, on ``ctx.device``) and the (possibly DDP-wrapped) model. Returns the fit
    result and the EMA (copy it into the model before exporting).
    """
    model.to(ctx.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{desc}: the model has no trainable parameters")
    apply_speed(model, speed)
    net = dist_utils.wrap_model(model, ctx, run.parallel, precision=optim.precision)
    if ctx.enabled:  # same init everywhere; from here each rank draws its own noise
        torch.manual_seed(dist_utils.rank_seed(run.seed, ctx.rank))
    ema = EMA(model, decay=optim.ema_decay, warmup=True, trainable_only=True)
    opt, sched = make_optimizer(trainable, optim)
    parts = {"model": model, "ema": ema, "optimizer": opt, "scheduler": sched}
    dataset = RowsDataset(rows)
    with attention(speed):
        fitted = fit(desc=desc, out=out, ctx=ctx, run=run, optim=optim, parts=parts, net=net,
                     batches=lambda start: step_loader(dataset, batch_size=optim.batch_size,
                                                       total_steps=optim.steps, start_step=start,
                                                       seed=run.seed, ctx=ctx, num_workers=num_workers),
                     micro_step=lambda batch, step: micro_step(batch, step, net))
    return fitted, ema
