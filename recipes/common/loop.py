"""The optimisation loop every recipe's trainer runs; a trainer supplies only its loss.

A trainer builds its model, optimizer, scheduler and EMA, then calls :func:`fit` with

- ``batches(start_step)``: an iterable of this rank's batches for steps ``start_step ..``
  (a pure function of the seed and the step, so a resumed or rolled-back run sees the same
  batches as an uninterrupted one);
- ``micro_step(batch, step)``: the losses of one micro-batch as a dict with a ``"total"``
  entry (the one that is back-propagated); the batch's tensors are already on the run's
  device (``ctx.device``); it runs under autocast on that device when ``optim.precision`` is
  ``bf16`` or ``fp16`` and with gradient sync switched off except on the last micro-batch;
- optionally ``after_step(step)``: work after the optimizer step (a discriminator update);
  it returns more losses to log;
- optionally ``report()``: counts to add to each ``log.jsonl`` line (read failures of the
  data, :mod:`recipes.common.data`); an empty dict adds nothing.

:func:`fit` does everything else, the same way for every recipe: resume from the newest
checkpoint, the progress bar, gradient accumulation (``optim.grad_accum`` micro-batches),
gradient clipping (after unscaling, with the fp16 gradient scaler), the EMA update, the non-finite guard (``run.on_nonfinite`` = stop / skip
/ rollback, :mod:`recipes.common.faults`), ``log.jsonl``, atomic checkpoints every
``run.checkpoint_every`` steps and at the end, and the wall-time budget
``run.max_minutes`` (stop and save). ``run`` and ``optim`` are the recipes' config sections:
:class:`OptimConfig` and :class:`RunConfig`, which each recipe subclasses to change defaults.

Device and precision: ``run.device`` (``auto``: ``cuda:LOCAL_RANK`` when CUDA is there) is
resolved once, in :func:`start_run`, by :func:`avblocks.device.resolve_device`, and travels
in the context (``ctx.device``); ``optim.precision`` (``fp32`` | ``bf16`` | ``fp16``) picks the
autocast dtype (:mod:`avblocks.device`). On the CPU in ``fp32`` every step is the one the
trainers ran before devices existed.

Also here, what every trainer's set-up and entry point repeat: :func:`start_run` (device,
process group, validation, the run folder's lock, the rerun check, ``config.yaml``),
:func:`make_optimizer` (AdamW + warm-up cosine schedule), :func:`step_batches` (this rank's
slice of every step's batch) and :func:`run_entry_point` (the ``main(argv)`` of a recipe
module, which releases the run folder's lock however it ends).
"""

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import torch
from tqdm import tqdm

from avblocks.config import ConfigError, check_fields
from avblocks.config_rules import CHANGEABLE, SEED, at_least, in_range
from avblocks.device import (
    Precision,
    autocast,
    configure_matmul,
    grad_scaler,
    resolve_device,
    to_device,
)
from recipes.common import distributed as dist_utils
from recipes.common import run_lock
from recipes.common.config import dump_config, parse_cli, require
from recipes.common.faults import FaultInjection, NonFiniteError, NonFiniteGuard
from recipes.common.rerun import check_rerun, latest_step
from recipes.common.schedule import StepBatchSampler, warmup_cosine
from recipes.common.speed import check_sections
from recipes.common.watch import Probes, Watch, tensorboard_hint

__all__ = [
    "FitResult",
    "run_device",
    "OptimConfig",
    "RunConfig",
    "ema_model",
    "fit",
    "make_optimizer",
    "run_entry_point",
    "check_optim",
    "start_run",
    "step_batches",
]

C = TypeVar("C")


@dataclass
class OptimConfig:
    """The ``optim`` section: what :func:`fit` and :func:`make_optimizer` read.

    A recipe subclasses it and redeclares only the fields whose default differs.
    """

    # optimizer steps of the whole run (a resumed run counts the earlier ones); a rerun may extend it
    steps: Annotated[int, at_least(1), CHANGEABLE] = 1000
    batch_size: Annotated[int, at_least(1)] = 16  # clips per optimizer step, over all ranks and micro-batches
    # peak AdamW learning rate, reached after the warm-up; AdamW moves each weight by about lr a
    # step, so no useful value is near 10, and huge ones make float32 weights inf after one step
    lr: Annotated[float, in_range(0, 10, lo_open=True)] = 1e-3
    weight_decay: Annotated[float, in_range(0, 10)] = 0.0  # AdamW's decoupled weight decay
    warmup: Annotated[int, at_least(0)] = 50  # steps of linear warm-up from 0 to lr
    min_lr_ratio: Annotated[float, in_range(0, 1)] = 0.1  # the cosine decay ends at lr x this at the last step
    grad_clip: Annotated[float, at_least(0)] = 1.0  # the gradients' global norm is clipped to this (0: no clipping)
    # decay of the weights' exponential moving average (the kept model)
    ema_decay: Annotated[float, in_range(0, 1, hi_open=True)] = 0.995
    precision: Precision = "fp32"  # fp32 | bf16 | fp16: forward and loss under autocast to it (fp16: + loss scaling)
    # micro-batches per optimizer step; batch_size stays the global batch
    grad_accum: Annotated[int, at_least(1)] = 1


def check_optim(optim: OptimConfig, section: str = "optim", *, world_size: int = 1) -> None:
    """What an optim section's fields must satisfy together (each field's own bounds are
    declared on it): the warm-up fits in the run (a skipped, zero-step stage has none), and
    the batch splits evenly over ranks and micro-batches."""
    require(optim.steps == 0 or optim.warmup <= optim.steps,
            f"{section}.warmup ({optim.warmup}) must be <= {section}.steps ({optim.steps})")
    require(optim.batch_size % (world_size * optim.grad_accum) == 0,
            f"{section}.batch_size ({optim.batch_size}) must be divisible by the number of ranks "
            f"({world_size}) x {section}.grad_accum ({optim.grad_accum})")


@dataclass
class RunConfig:
    """The ``run`` section: where and how a run goes, as :func:`fit` reads it.

    A recipe subclasses it and redeclares only the fields whose default differs or that it
    adds.
    """

    output_dir: str = "outputs/run"  # config.yaml, checkpoints/, log.jsonl and the model go here
    seed: Annotated[int, SEED] = 0  # the initial weights, the batch order and (per rank) the noise derive from it
    log_every: Annotated[int, at_least(1), CHANGEABLE] = 10  # a log.jsonl line every this many steps
    # an atomic checkpoint every this many steps (and at the end)
    checkpoint_every: Annotated[int, at_least(1), CHANGEABLE] = 200
    keep_checkpoints: Annotated[int, at_least(1), CHANGEABLE] = 3  # the newest this many checkpoints are kept
    # > 0: stop (and save) once this much wall time has passed
    max_minutes: Annotated[float, at_least(0), CHANGEABLE] = 0.0
    progress: Annotated[bool, CHANGEABLE] = True  # the progress bar (rank 0)
    # see recipes.common.faults
    on_nonfinite: Annotated[Literal["stop", "skip", "rollback"], CHANGEABLE] = "stop"
    # rollbacks allowed before a non-finite step stops the run
    max_rollbacks: Annotated[int, at_least(0), CHANGEABLE] = 3
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (DDP) or shard (FSDP2)
    # watching (recipes.common.watch): TensorBoard events next to log.jsonl, a validation loss
    # on eval_clips held-out clips every eval_every steps and at the end (0: never), and
    # `samples` clips (0: none) every sample_every steps (0: only at the end); how a run is
    # watched, not what it trains, so a rerun may change it
    tensorboard: Annotated[bool, CHANGEABLE] = True
    eval_every: Annotated[int, at_least(0), CHANGEABLE] = 250
    eval_clips: Annotated[int, at_least(1), CHANGEABLE] = 16
    sample_every: Annotated[int, at_least(0), CHANGEABLE] = 0
    samples: Annotated[int, at_least(0), CHANGEABLE] = 0  # the shipped configs set it; a set costs seconds on a CPU
    # auto (cuda:LOCAL_RANK when CUDA is there, else cpu) | cpu | cuda | cuda:N; a rerun may
    # move the run to another device
    device: Annotated[str, CHANGEABLE] = "auto"
    tf32: Annotated[bool, CHANGEABLE] = True  # on CUDA, float32 matmuls / convolutions use TF32 (the CPU is unaffected)


@dataclass
class FitResult:
    steps: int  # optimizer steps done, counting those of the run that was resumed
    minutes: float  # wall time of this call
    losses: dict[str, float]  # the last step's losses (rank mean is in log.jsonl)
    nonfinite_events: list = field(default_factory=list)

    def summary(self) -> dict:
        """What a trainer returns: steps, minutes, the last loss, and any non-finite events.

        ``final_loss`` is None when the call trained nothing (a finished run, rerun).
        """
        result = {"steps": self.steps, "train_minutes": self.minutes, "final_loss": self.losses.get("total")}
        if self.nonfinite_events:
            result["nonfinite_events"] = self.nonfinite_events
        return result


def fit(
    *,
    desc: str,
    out: Path,
    ctx: dist_utils.DistContext,
    run: RunConfig,
    optim: OptimConfig,
    parts: dict[str, Any],
    net: torch.nn.Module,
    batches: Callable[[int], Iterable],
    micro_step: Callable[[Any, int], dict[str, torch.Tensor]],
    after_step: Callable[[int], dict[str, torch.Tensor]] | None = None,
    pairs: tuple[tuple[str, str], ...] = (("model", "optimizer"),),
    probes: Probes | None = None,
    report: Callable[[], dict[str, Any]] | None = None,
) -> FitResult:
    """Train ``parts["model"]`` (wrapped for DDP/FSDP as ``net``) for ``optim.steps`` steps.

    ``parts`` holds ``model``, ``optimizer``, ``scheduler``, ``ema`` and any extra state to
    checkpoint (e.g. a discriminator and its optimizer, named in ``pairs``). Fields read:
    ``optim.steps, batch_size, grad_accum, grad_clip, precision`` and ``run.seed, log_every,
    checkpoint_every, keep_checkpoints, max_minutes, progress, on_nonfinite, max_rollbacks,
    parallel`` and the watching fields (``probes``: :mod:`recipes.common.watch`).
    """
    model, ema = parts["model"], parts["ema"]
    opt, sched = parts["optimizer"], parts["scheduler"]
    device = ctx.device
    scaler = grad_scaler(device, optim.precision)  # a pass-through unless fp16
    if scaler.is_enabled():  # its loss scale is state: checkpointed with the rest
        parts = {**parts, "grad_scaler": scaler}
    faults = FaultInjection.from_env()
    checkpoints = dist_utils.TrainCheckpoints(
        out / "checkpoints", keep=run.keep_checkpoints, ctx=ctx, seed=run.seed,
        sharded=ctx.enabled and run.parallel == "fsdp", pad=faults.pad, pairs=pairs)
    guard = NonFiniteGuard(run.on_nonfinite, run.max_rollbacks)
    if ctx.is_main:  # only the lock holder, which no live save but its own can be writing beside
        for leftover in run_lock.remove_leftovers(out / "checkpoints"):
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
    with (open(out / "log.jsonl" if ctx.is_main else os.devnull, "a", buffering=1) as log,
          Watch(run=run, out=out, is_main=ctx.is_main, model=model, probes=probes, start=start, total=optim.steps,
                batch_size=optim.batch_size, sharded=ctx.enabled and run.parallel == "fsdp") as watch):

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
                batch = to_device(batch, device)  # non_blocking: from pinned memory on CUDA
                opt.zero_grad(set_to_none=True)
                totals = {}
                for i, part in enumerate(dist_utils.split_batch(batch, k)):
                    with dist_utils.gradient_sync(net, enabled=i == k - 1):
                        with autocast(device, optim.precision):
                            losses = micro_step(part, step)
                        losses["total"] = faults.loss(step, losses["total"])
                        scaler.scale(losses["total"] if k == 1 else losses["total"] / k).backward()
                    for key, value in losses.items():
                        totals[key] = totals.get(key, 0.0) + (value.detach() if k == 1 else value.detach() / k)
                scaler.unscale_(opt)
                grad_norm = dist_utils.full(torch.nn.utils.clip_grad_norm_(  # 0: measured, not clipped
                    model.parameters(), optim.grad_clip or float("inf")))
                # fp16: an overflowing gradient is the scaler's business (it skips the step and
                # lowers the scale), not a fault
                what = (None if torch.isfinite(totals["total"]) else f"loss ({totals['total'].item()})") or (
                    None if torch.isfinite(grad_norm) or scaler.is_enabled()
                    else f"gradient norm ({grad_norm.item()})")
                action = None
                if guard.forced_skip(step):  # same on every rank: no collective needed
                    action, what = "skip", "replayed step that went wrong before a rollback"
                elif dist_utils.any_rank(what is not None):
                    what = what or "loss or gradients on another rank"
                    action = guard.decide(step, what)
                if action is not None and scaler.is_enabled():
                    scaler.update()  # closes this step's unscale_ (no optimizer step follows)
                if action == "rollback":
                    start, finished = roll_back(step, what), False
                    break
                if action == "skip":
                    opt.zero_grad(set_to_none=True)
                    sched.step()  # the schedule stays a function of the global step
                    log.write(json.dumps({"step": step, "skipped": what}) + "\n")
                else:
                    scaler.step(opt)  # opt.step(); under fp16 skipped when the gradients overflowed
                    scaler.update()
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
                    scale = {"loss_scale": scaler.get_scale()} if scaler.is_enabled() else {}  # fp16: halves on overflow
                    log.write(json.dumps({"step": step, "lr": sched.get_last_lr()[0]} | scale
                                         | {n: round(v.item(), 6) for n, v in totals.items()}
                                         | (report() if report is not None else {})) + "\n")
                    watch.scalars(step, totals, lr=sched.get_last_lr()[0], grad_norm=grad_norm.item())
                done = step + 1
                out_of_time = run.max_minutes > 0 and dist_utils.any_rank(elapsed > 60 * run.max_minutes)
                if done % run.checkpoint_every == 0 or done == optim.steps or out_of_time:
                    if (bad := checkpoints.save(done, parts)) is not None:
                        what = f"weights ({bad}); checkpoint step {done} not written"
                        guard.decide(step, what, can_skip=False)  # raises unless rollback
                        start, finished = roll_back(step, what), False
                        break
                watch.after_step(done, log)
                if out_of_time:
                    if ctx.is_main:
                        print(f"time budget of {run.max_minutes} min reached at step {done}")
                    break
                faults.stop(step, totals["total"])
            bar.close()
        watch.finish(done, log)
    return FitResult(steps=done, minutes=round((time.monotonic() - began) / 60, 2),
                     losses={n: round(float(v), 6) for n, v in totals.items()},
                     nonfinite_events=guard.events)


def run_device(run: RunConfig) -> torch.device:
    """``run.device`` resolved for this process (:func:`avblocks.device.resolve_device`), with
    TF32 set as ``run.tf32`` says when it is a GPU; a bad value is a :class:`ConfigError`
    naming it."""
    try:
        device = resolve_device(run.device)
    except ValueError as error:
        raise ConfigError(f"run.device: {error}") from None
    configure_matmul(device, tf32=run.tf32)
    return device


def start_run(cfg: Any, validate: Callable[..., None],
              stages: dict[str, str] | None = None) -> tuple[dist_utils.DistContext, Path]:
    """Check the config, then claim ``cfg.run.output_dir`` and write ``config.yaml`` into it.

    In order, nothing written before the last step:

    1. resolve ``run.device`` and join the process group on it (under torchrun), check every
       field's declared rules
       (:func:`avblocks.config.check_fields`: ``cfg`` may have been built in Python) and
       ``validate(cfg, world_size=...)``; a refused config leaves no folder behind;
    2. on rank 0: take the folder's lock (:mod:`recipes.common.run_lock`; a second run on the
       folder is refused naming the holder) and compare ``cfg`` with the folder's saved
       ``config.yaml`` (:func:`recipes.common.rerun.check_rerun`; ``stages`` maps each
       checkpoint folder to the section counting its steps, ``{"checkpoints": "optim"}`` by
       default); a refusal here releases the lock and leaves the folder as it was;
    3. write ``config.yaml``, and record the allowed changes of a rerun in ``log.jsonl``.

    A refusal on rank 0 is raised on every rank.
    """
    ctx = dist_utils.init_distributed(device=run_device(cfg.run))
    check_fields(cfg)
    validate(cfg, world_size=ctx.world_size)
    check_sections(cfg, ctx.device, sharded=ctx.enabled and cfg.run.parallel == "fsdp")
    out = Path(cfg.run.output_dir)
    failure = None
    if ctx.is_main:
        try:
            _claim(cfg, out, stages or {"checkpoints": "optim"})
        except (ConfigError, run_lock.RunFolderLocked) as e:
            failure = e
    shared = dist_utils.gather_objects(None if failure is None else (isinstance(failure, ConfigError),
                                                                      str(failure)))[0]
    if failure is not None:
        raise failure
    if shared is not None:
        raise (ConfigError if shared[0] else run_lock.RunFolderLocked)(shared[1])
    return ctx, out


def _claim(cfg: Any, out: Path, stages: dict[str, str]) -> None:
    lock = run_lock.hold(out)
    try:
        changes = check_rerun(cfg, out, stages)
    except ConfigError:
        run_lock.release(lock.folder)
        raise
    dump_config(cfg, out / "config.yaml")
    if changes:
        step = latest_step(out / next(iter(stages))) or 0
        print(f"{out}: resuming with a changed config: " +
              "; ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items()))
        with open(out / "log.jsonl", "a") as log:
            log.write(json.dumps({"step": step, "config_changed": {k: list(v) for k, v in changes.items()}}) + "\n")


def make_optimizer(params: Iterable, optim: OptimConfig) -> tuple[torch.optim.Optimizer,
                                                                   torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (betas 0.9, 0.99, as every recipe here has used) and its linear warm-up + cosine
    schedule (:func:`warmup_cosine`) over ``optim.steps`` steps.

    A zero-step stage (READ's, when skipped) still gets a valid schedule: its length is taken
    as at least 1.
    """
    opt = torch.optim.AdamW(params, lr=optim.lr, betas=(0.9, 0.99), weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, partial(warmup_cosine, warmup=optim.warmup, total=max(optim.steps, 1),
                     min_ratio=optim.min_lr_ratio))
    return opt, sched


def step_batches(num_items: int, optim: OptimConfig, seed: int,
                 ctx: dist_utils.DistContext) -> Callable[[int], dist_utils.ShardedBatchSampler]:
    """``fit``'s ``batches``: this rank's item indices of every step from ``start`` on.

    The global batch of step ``s`` is a function of ``seed`` and ``s`` alone
    (:class:`StepBatchSampler`); each rank takes its slice of it.
    """
    def batches(start: int) -> dist_utils.ShardedBatchSampler:
        return dist_utils.ShardedBatchSampler(
            StepBatchSampler(num_items=num_items, batch_size=optim.batch_size, total_steps=optim.steps,
                             seed=seed, start_step=start),
            rank=ctx.rank, world_size=ctx.world_size)
    return batches


def ema_model(model: torch.nn.Module, ema: Any, ctx: dist_utils.DistContext, parallel: str,
              rebuild: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The model to keep: ``ema``'s weights copied into ``model``, as a plain module on rank 0.

    Under FSDP the shards are gathered (a collective: every rank calls this) into a fresh
    ``rebuild()`` on rank 0; the other ranks get back their sharded ``model``.
    """
    ema.copy_to(model)
    if ctx.enabled and parallel == "fsdp":
        full = dist_utils.full_model_state(model, rank0_only=True)
        if ctx.is_main:
            model = rebuild()
            model.load_state_dict(full)
    return model


def run_entry_point(config_class: type[C], train: Callable[[C], Any], argv=None,
                    description: str = "") -> Any:
    """A recipe's ``main``: read the config from the command line, ``train`` it, leave the
    process group (also on error), print the result as JSON on rank 0 and return it."""
    cfg = parse_cli(config_class, argv, description=description)
    if int(os.environ.get("RANK", 0)) == 0 and getattr(getattr(cfg, "run", None), "tensorboard", False):
        print(tensorboard_hint(cfg.run.output_dir), flush=True)
    try:
        result = train(cfg)
    finally:
        run_lock.release_all()
        dist_utils.destroy_distributed()
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(result, indent=2))
    return result
