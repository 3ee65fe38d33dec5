"""The optimisation loop every recipe's trainer runs; a trainer supplies only its loss.

A trainer builds its model, optimizer, scheduler and EMA, then calls :func:`fit` with

- ``batches(start_step)``: an iterable of this rank's batches for steps ``start_step ..``
  (a pure function of the seed and the step, so a resumed or rolled-back run sees the same
  batches as an uninterrupted one);
- ``micro_step(batch, step)``: the losses of one micro-batch as a dict with a ``"total"``
  entry (the one that is back-propagated); it runs under bf16 autocast when
  ``optim.bf16`` and with gradient sync switched off except on the last micro-batch;
- optionally ``after_step(step)``: work after the optimizer step (a discriminator update);
  it returns more losses to log.

:func:`fit` does everything else, the same way for every recipe: resume from the newest
checkpoint, the progress bar, gradient accumulation (``optim.grad_accum`` micro-batches),
gradient clipping, the EMA update, the non-finite guard (``run.on_nonfinite`` = stop / skip
/ rollback, :mod:`recipes.common.faults`), ``log.jsonl``, atomic checkpoints every
``run.checkpoint_every`` steps and at the end, and the wall-time budget
``run.max_minutes`` (stop and save). ``run`` and ``optim`` are the recipes' config sections;
the fields read are named in :func:`fit`'s docstring.
"""

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from recipes.common import distributed as dist_utils
from recipes.common.faults import (
    FaultInjection,
    NonFiniteError,
    NonFiniteGuard,
    remove_stale_temporaries,
)

__all__ = ["FitResult", "fit"]


@dataclass
class FitResult:
    steps: int  # optimizer steps done, counting those of the run that was resumed
    minutes: float  # wall time of this call
    losses: dict[str, float]  # the last step's losses (rank mean is in log.jsonl)
    nonfinite_events: list = field(default_factory=list)


def fit(
    *,
    desc: str,
    out: Path,
    ctx: dist_utils.DistContext,
    run: Any,
    optim: Any,
    parts: dict[str, Any],
    net: torch.nn.Module,
    batches: Callable[[int], Iterable],
    micro_step: Callable[[Any, int], dict[str, torch.Tensor]],
    after_step: Callable[[int], dict[str, torch.Tensor]] | None = None,
    pairs: tuple[tuple[str, str], ...] = (("model", "optimizer"),),
) -> FitResult:
    """Train ``parts["model"]`` (wrapped for DDP/FSDP as ``net``) for ``optim.steps`` steps.

    ``parts`` holds ``model``, ``optimizer``, ``scheduler``, ``ema`` and any extra state to
    checkpoint (e.g. a discriminator and its optimizer, named in ``pairs``). Fields read:
    ``optim.steps, batch_size, grad_accum, grad_clip, bf16`` and ``run.seed, log_every,
    checkpoint_every, keep_checkpoints, max_minutes, progress, on_nonfinite, max_rollbacks,
    parallel``.
    """
    model, ema = parts["model"], parts["ema"]
    opt, sched = parts["optimizer"], parts["scheduler"]
    faults = FaultInjection.from_env()
    checkpoints = dist_utils.TrainCheckpoints(
        out / "checkpoints", keep=run.keep_checkpoints, ctx=ctx, seed=run.seed,
        sharded=ctx.enabled and run.parallel == "fsdp", pad=faults.pad, pairs=pairs)
    guard = NonFiniteGuard(run.on_nonfinite, run.max_rollbacks)
    if ctx.is_main:
        for leftover in remove_stale_temporaries(out / "checkpoints"):
            print(f"removed {leftover.name}, left by an interrupted save")

    start = 0
    if (resumed := checkpoints.restore(parts)) is not None:
        start = resumed
        if ctx.is_main:
            print(f"resuming from step {start} ({checkpoints.latest()})")

    k = optim.grad_accum
    began, done, totals = time.monotonic(), start, {}
    model.train()
    # line-buffered: tail -f works; other ranks log nowhere
    with open(out / "log.jsonl" if ctx.is_main else os.devnull, "a", buffering=1) as log:

        def roll_back(step: int, what: str) -> int:
            target = checkpoints.restore(parts)
            if target is None:
                raise NonFiniteError(f"non-finite {what} at step {step} and no checkpoint to roll back "
                                     f"to in {checkpoints.directory}; training stopped")
            log.write(json.dumps({"step": step, "rolled_back_to": target, "reason": what}) + "\n")
            if ctx.is_main:
                print(f"non-finite {what} at step {step}: rolled back to step {target}; "
                      f"step {step} will be skipped")
            return target

        finished = False
        while not finished:
            finished = True
            bar = tqdm(batches(start), initial=start, total=optim.steps, desc=desc,
                       disable=not (run.progress and ctx.is_main), dynamic_ncols=True)
            for step, batch in enumerate(bar, start=start):
                opt.zero_grad(set_to_none=True)
                totals = {}
                for i, part in enumerate(dist_utils.split_batch(batch, k)):
                    with dist_utils.gradient_sync(net, enabled=i == k - 1):
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=optim.bf16):
                            losses = micro_step(part, step)
                        losses["total"] = faults.loss(step, losses["total"])
                        (losses["total"] if k == 1 else losses["total"] / k).backward()
                    for key, value in losses.items():
                        totals[key] = totals.get(key, 0.0) + (value.detach() if k == 1 else value.detach() / k)
                grad_norm = dist_utils.full(torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip))
                what = (None if torch.isfinite(totals["total"]) else f"loss ({totals['total'].item()})") or (
                    None if torch.isfinite(grad_norm) else f"gradient norm ({grad_norm.item()})")
                action = None
                if guard.forced_skip(step):  # same on every rank: no collective needed
                    action, what = "skip", "replayed step that went wrong before a rollback"
                elif dist_utils.any_rank(what is not None):
                    what = what or "loss or gradients on another rank"
                    action = guard.decide(step, what)
                if action == "rollback":
                    start, finished = roll_back(step, what), False
                    break
                if action == "skip":
                    opt.zero_grad(set_to_none=True)
                    sched.step()  # the schedule stays a function of the global step
                    log.write(json.dumps({"step": step, "skipped": what}) + "\n")
                else:
                    opt.step()
                    sched.step()
                    ema.update(model)
                    faults.weights(step, model)
                    if after_step is not None:
                        totals |= after_step(step)
                elapsed = time.monotonic() - began
                bar.set_postfix(loss=f"{totals['total'].item():.4f}",
                                clips_per_s=f"{(step + 1 - start) * optim.batch_size / max(elapsed, 1e-9):.1f}")
                if step % run.log_every == 0 and action is None:
                    names = list(totals)
                    values = torch.stack([totals[n].float() for n in names])
                    if ctx.enabled:
                        totals = dict(zip(names, dist_utils.all_reduce_mean(values), strict=True))
                    log.write(json.dumps({"step": step, "lr": sched.get_last_lr()[0]}
                                         | {n: round(v.item(), 6) for n, v in totals.items()}) + "\n")
                done = step + 1
                out_of_time = run.max_minutes > 0 and dist_utils.any_rank(elapsed > 60 * run.max_minutes)
                if done % run.checkpoint_every == 0 or done == optim.steps or out_of_time:
                    if (bad := checkpoints.save(done, parts)) is not None:
                        what = f"weights ({bad}); checkpoint step {done} not written"
                        guard.decide(step, what, can_skip=False)  # raises unless rollback
                        start, finished = roll_back(step, what), False
                        break
                if out_of_time:
                    if ctx.is_main:
                        print(f"time budget of {run.max_minutes} min reached at step {done}")
                    break
            bar.close()
    return FitResult(steps=done, minutes=round((time.monotonic() - began) / 60, 2),
                     losses={n: round(float(v), 6) for n, v in totals.items()},
                     nonfinite_events=guard.events)
