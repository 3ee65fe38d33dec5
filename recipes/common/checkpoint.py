"""Training-state checkpoints: atomic, complete, self-checking, loaded without pickle execution.

A checkpoint is one file ``step_00001234.pt`` holding everything a run needs to continue
exactly: model, EMA, optimizer and scheduler states, the step (which is also the data
position, see :mod:`recipes.common.schedule`) and the RNG states. It is written with
:func:`avblocks.config.atomic_path` (temporary file, fsync, rename), so a crash mid-save
leaves the previous checkpoint intact; the last ``keep`` checkpoints are kept. Loading uses
``torch.load(weights_only=True)``. A state whose tensors are not finite is never written.

Each checkpoint proves itself (:mod:`avblocks.checksums`): its SHA-256 is recorded in
``step_00001234.pt.sha256`` (written before the checkpoint is renamed into place, so a
checkpoint under its final name always has its record). :meth:`CheckpointManager.load_newest`
takes the newest checkpoint that verifies and loads; each one that does not (a flipped byte,
a truncated or empty file) is reported with its file and the check that failed, and set
aside as ``<name>.damaged`` so that neither resuming nor pruning sees it again. When none is
intact, the error lists every file and why. A checkpoint without a record (written before
records existed) is loaded unchecked, with a warning.
"""

import json
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from avblocks.atomic import atomic_path, atomic_write_text
from avblocks.checksums import mismatch, sha256
from avblocks.device import HOST
from avblocks.saveload import CheckpointError, reading
from recipes.common.faults import find_non_finite

Damaged = list[tuple[Path, str]]
"""Checkpoints that failed to verify or load, with why."""

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def capture_rng() -> dict[str, Any]:
    """The CPU generator, Python's and (where CUDA is in use) every GPU's default generator."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


class CheckpointManager:
    """Saves ``step_XXXXXXXX.pt`` files in ``directory`` and finds the newest one."""

    def __init__(self, directory: str | Path, *, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep ({keep}) must be at least 1")
        self.directory = Path(directory)
        self.keep = keep

    def checkpoints(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))

    def save(self, step: int, state: dict[str, Any]) -> Path:
        bad = find_non_finite(state.get("model"), "model") or find_non_finite(state.get("ema"), "ema")
        if bad is not None:
            raise FloatingPointError(f"refusing to save step {step}: {bad} holds NaN or Inf")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"step_{step:08d}.pt"
        with atomic_path(path) as tmp:
            torch.save({**state, "step": step}, tmp)
            atomic_write_text(record_path(path), json.dumps({"sha256": sha256(tmp)}) + "\n")
        for old in self.checkpoints()[: -self.keep]:
            old.unlink()
            record_path(old).unlink(missing_ok=True)
        return path

    def load_newest(self, map_location: "str | torch.device" = HOST) -> tuple[dict[str, Any], Path, Damaged] | None:
        """``(state, path, damaged)`` of the newest checkpoint that verifies and loads, or None
        when there is no checkpoint (on the CPU by default: ``load_state_dict`` copies each
        tensor to the device of the tensor it fills). ``damaged`` lists, newest first, the newer files that
        failed and why; set them aside with :func:`set_aside`. Raises
        :class:`CheckpointError` listing every file when none is intact."""
        return newest_intact(self.directory, self.checkpoints(), lambda p: load_checked(p, map_location))

    def load_latest(self, map_location: "str | torch.device" = HOST) -> dict[str, Any] | None:
        """The newest intact checkpoint's state (see :meth:`load_newest`), or None."""
        found = self.load_newest(map_location)
        return None if found is None else found[0]


def newest_intact(directory: Path, candidates: list[Path], load) -> tuple[Any, Path, Damaged] | None:
    """``(load(path), path, damaged)`` for the newest of ``candidates`` (oldest first) that
    ``load`` accepts; None without candidates; a :class:`CheckpointError` naming every
    candidate and its failure when ``load`` refuses them all."""
    damaged: Damaged = []
    newest_error = None
    for path in reversed(candidates):
        try:
            return load(path), path, damaged
        except CheckpointError as e:
            damaged.append((path, str(e)))
            newest_error = newest_error or e
    if newest_error is not None:  # the newest one's error type (an unsafe file stays one)
        raise type(newest_error)(f"no intact checkpoint in {directory}: " +
                                 "; ".join(why for _, why in damaged))
    return None


def record_path(path: Path) -> Path:
    """Where the SHA-256 of checkpoint ``path`` is recorded."""
    return path.with_name(path.name + ".sha256")


def load_checked(path: Path, map_location: "str | torch.device" = HOST) -> dict[str, Any]:
    """A checkpoint file's state after checking its recorded SHA-256; any failure is a
    :class:`CheckpointError` naming the file and the check."""
    record = record_path(path)
    if record.is_file():
        with reading(record):
            expected = json.loads(record.read_text())["sha256"]
        if (why := mismatch(path, expected, str(record))) is not None:
            raise CheckpointError(why)
    else:
        warnings.warn(f"{path} has no SHA-256 record ({record.name}): loaded unchecked", stacklevel=2)
    with reading(path):
        state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (no 'step' entry)")
    return state


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint (file or folder) and its record to ``<name>.damaged``."""
    target = path.with_name(path.name + ".damaged")
    os.replace(path, target)
    if record_path(path).exists():
        os.replace(record_path(path), record_path(target))
    return target
