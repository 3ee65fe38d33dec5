"""Training you can watch: TensorBoard scalars, a held-out validation loss and samples.

:func:`recipes.common.loop.fit` makes one :class:`Watch` per run and calls it at three points
(``scalars`` on every ``log.jsonl`` step, ``after_step`` after every optimizer step,
``finish`` at the end; it is a context manager that closes the event file even on error); a recipe hands it :class:`Probes`, the two things only the recipe knows:

- ``validation()``: the losses of the model on held-out clips (a dict with ``"total"``);
- ``samples()``: a :class:`~avblocks.pipelines.SoundingVideo` made by the recipe's own
  pipeline call on the EMA weights (``with ema.swapped(model)``: no copy, the training
  weights are restored bit for bit after), so what you watch is what the saved pipeline gives.

What it writes next to ``log.jsonl`` (rank 0 only):

- ``events.out.tfevents.*`` (``run.tensorboard``): ``loss/<term>`` for every loss term,
  ``lr``, ``grad_norm``, ``throughput/clips_per_s`` (over the steps since the previous log
  line, the time spent in validation and samples left out), ``memory/peak_rss_mib`` (the
  process's peak resident set) and, on CUDA, ``memory/cuda_max_allocated_mib``;
  ``validation/<term>``; and each sample set's contact sheet as an image;
- ``validation/<term>`` every ``run.eval_every`` steps and at the last step (0: never), on
  ``run.eval_clips`` held-out clips, as a ``{"step", "validation"}`` line of ``log.jsonl``;
- ``samples/step_XXXXXX/`` every ``run.sample_every`` steps (0: only at the end) when
  ``run.samples > 0``: ``clip_XX.mp4`` and ``contact_sheet.png``, written into a hidden
  folder that is renamed into place whole (each file through :mod:`avblocks.atomic`), then
  listed as a ``{"step", "samples"}`` line of ``log.jsonl``.

Validation and samples run with the global random state saved and restored and reseeded with
``run.seed``: the training stream (and so exact resume) is untouched, and every validation
sees the same noise, so its curve moves only with the weights. They run on every rank (an
FSDP forward needs them all); samples are skipped under FSDP (the weights are sharded).
"""

import json
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from PIL import Image

from avblocks.device import is_cuda

__all__ = ["Probes", "Watch", "tensorboard_hint", "write_samples"]


@dataclass
class Probes:
    """What a recipe lets :class:`Watch` measure; either may be None (not measured)."""

    validation: Callable[[], dict[str, torch.Tensor]] | None = None
    samples: Callable[[], Any] | None = None  # -> SoundingVideo


def tensorboard_hint(folder: str | Path) -> str:
    """The line that tells a user how to watch a run folder."""
    return f"watch it: tensorboard --logdir {folder}"


def summary_writer(out: Path, purge_step: int | None):
    """A SummaryWriter on ``out``, or a clear error when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch imports tensorboard lazily; it is an optional dependency
        raise ImportError("run.tensorboard is true but the tensorboard package is not installed: "
                          "pip install 'avblocks[tensorboard]', or set run.tensorboard=false") from e
    return SummaryWriter(str(out), purge_step=purge_step, flush_secs=30)


def peak_rss_mib() -> float:
    """The process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def write_samples(folder: Path, clips: Any) -> list[Path]:
    """``clips`` (a SoundingVideo) as ``clip_XX.mp4`` and ``contact_sheet.png`` in ``folder``.

    The files go into a hidden sibling folder that replaces ``folder`` whole at the end, so a
    crash leaves either the complete set or the previous one; returns the final paths.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()
    try:
        written = clips.save(tmp / "clip.mp4")
        names = [p.name for p in (written if isinstance(written, list) else [written])]
        names.append(clips.preview(tmp / "contact_sheet.png").name)
        if folder.exists():  # the same step sampled again (a resumed run): the new set wins
            stale = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.old")
            folder.rename(stale)
            tmp.rename(folder)
            shutil.rmtree(stale)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [folder / name for name in names]


class Watch:
    """The TensorBoard writer, the validation loss and the sample sets of one :func:`fit` call.

    ``run`` is the ``run`` config section (fields ``tensorboard, eval_every, eval_clips,
    sample_every, samples, seed``; a section without the probe fields, like the feature
    network's, gets the scalars only); ``start`` the first step of this call (a
    resumed run's TensorBoard events from ``start`` on are purged), ``total`` the last one.
    """

    def __init__(self, *, run: Any, out: Path, is_main: bool, model: torch.nn.Module, probes: Probes | None,
                 start: int, total: int, batch_size: int, sharded: bool):
        for name in ("eval_every", "eval_clips", "sample_every", "samples"):
            if getattr(run, name, 0) < 0:
                raise ValueError(f"run.{name} ({getattr(run, name)}) must be >= 0")
        self.run, self.out, self.is_main, self.model = run, out, is_main, model
        self.probes = probes or Probes()  # no probe: the fields it would read are never read
        self.total, self.batch_size, self.sharded = total, batch_size, sharded
        self.writer = summary_writer(out, purge_step=start or None) if run.tensorboard and is_main else None
        self.last_done, self.last_time, self.probe_seconds = start, time.monotonic(), 0.0
        self.first, self.sampled_at = start, -1

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()

    def scalars(self, step: int, losses: dict[str, float], *, lr: float, grad_norm: float) -> None:
        """Losses per term, learning rate, gradient norm, throughput and memory at ``step``."""
        now, done = time.monotonic(), step + 1
        if done <= self.last_done:  # a rollback went back: measure from here on
            self.last_done, self.last_time, self.probe_seconds = done - 1, now, 0.0
        seconds = max(now - self.last_time - self.probe_seconds, 1e-9)
        clips_per_s = (done - self.last_done) * self.batch_size / seconds
        self.last_done, self.last_time, self.probe_seconds = done, now, 0.0
        if self.writer is None:
            return
        values = {f"loss/{name}": float(v) for name, v in losses.items()} | {
            "lr": lr, "grad_norm": grad_norm, "throughput/clips_per_s": clips_per_s,
            "memory/peak_rss_mib": peak_rss_mib()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            values["memory/cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def after_step(self, done: int, log: TextIO) -> None:
        """Validation and samples when ``done`` (steps completed) is one of their steps."""
        r = self.run
        if self.probes.validation is not None and r.eval_every > 0 and (done % r.eval_every == 0
                                                                        or done == self.total):
            self._timed(self._validate, done, log)
        if (self.probes.samples is not None and r.samples > 0 and not self.sharded
                and (done == self.total or (r.sample_every > 0 and done % r.sample_every == 0))):
            self._timed(self._sample, done, log)

    def finish(self, done: int, log: TextIO) -> None:
        """Samples of the last step done when the run stopped before ``total`` (time budget)."""
        if (done > self.first and done != self.sampled_at and self.probes.samples is not None
                and self.run.samples > 0 and not self.sharded):
            self._timed(self._sample, done, log)

    def _timed(self, probe: Callable[[int, TextIO], None], done: int, log: TextIO) -> None:
        began = time.monotonic()
        mode = self.model.training
        self.model.eval()
        # the training streams (the CPU's and the model's GPU's) come back as they were
        cuda = sorted({p.device.index or 0 for p in self.model.parameters() if is_cuda(p.device)})
        try:
            with torch.random.fork_rng(devices=cuda), torch.no_grad():
                torch.manual_seed(self.run.seed)
                probe(done, log)
        finally:
            self.model.train(mode)
            self.probe_seconds += time.monotonic() - began

    def _validate(self, done: int, log: TextIO) -> None:
        losses = {name: round(float(v), 6) for name, v in self.probes.validation().items()}
        log.write(json.dumps({"step": done, "validation": losses}) + "\n")
        if self.writer is not None:
            for name, value in losses.items():
                self.writer.add_scalar(f"validation/{name}", value, done)

    def _sample(self, done: int, log: TextIO) -> None:
        self.sampled_at = done
        if not self.is_main:
            return
        clips = self.probes.samples()
        paths = write_samples(self.out / "samples" / f"step_{done:06d}", clips)
        log.write(json.dumps({"step": done, "samples": [str(p.relative_to(self.out)) for p in paths]}) + "\n")
        if self.writer is not None:
            # the contact sheet in TensorBoard's image tab, next to the curves
            sheet = np.asarray(Image.open(paths[-1]).convert("RGB"))
            self.writer.add_image("samples/contact_sheet", sheet, done, dataformats="HWC")
