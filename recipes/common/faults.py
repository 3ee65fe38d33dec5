"""What a trainer does when a step goes wrong, and the hooks that let tests make it go wrong.

Non-finite values (``run.on_nonfinite``):

- ``stop`` (default): raise :class:`NonFiniteError`, whose message names the step, the value
  and the two other policies. Nothing of the bad step is applied or saved.
- ``skip``: the step is consumed (the data position and the learning-rate schedule move on,
  so both stay functions of the global step) but nothing else changes: no optimizer step,
  no EMA update, no discriminator step. The skip is logged.
- ``rollback``: reload the newest checkpoint (model, EMA, optimizer, scheduler, RNG, data
  position) and replay from there; the step that went wrong is *skipped* when the replay
  reaches it (replaying it unchanged would only fail again: the batch and the RNG stream are
  the same). Because the replay is exact, a rollback over a deterministic bad step ends in
  exactly the state ``skip`` ends in. After ``run.max_rollbacks`` rollbacks the run stops.
  With no checkpoint to go back to, the run stops.

What counts as non-finite: the step's loss (mean over micro-batches and ranks), its gradient
norm, and the model/EMA weights whenever a checkpoint is about to be written (a checkpoint
with NaN/Inf weights is never written; under ``skip`` bad weights cannot be skipped and the
run stops). Every rank reaches the same decision (:func:`recipes.common.distributed.any_rank`).

Fault injection (tests only): the environment variable ``AVBLOCKS_FAULTS`` holds
``;``-separated entries

- ``nan_loss@S[,S...]``: the loss of global step ``S`` becomes NaN (every time it is run);
- ``nan_weights@S``: after the optimizer step of step ``S`` one weight becomes NaN (once per
  process);
- ``pad_checkpoint_mb=N``: checkpoints carry an extra ``N`` MB tensor, so that saving takes
  long enough for a test to kill the process inside ``torch.save``;
- ``stop_after@S``: once global step ``S`` is done (logged, checkpointed), raise
  :class:`InjectedStop` carrying that step's loss, so a test can look at one step of any
  trainer without waiting for the run to end.

Without the variable every hook is the identity.
"""

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "FAULTS_ENV",
    "FaultInjection",
    "InjectedStop",
    "NonFiniteError",
    "NonFiniteGuard",
    "Policy",
    "find_non_finite",
    "remove_stale_temporaries",
]

Policy = Literal["stop", "skip", "rollback"]
POLICIES = ("stop", "skip", "rollback")
FAULTS_ENV = "AVBLOCKS_FAULTS"


class NonFiniteError(FloatingPointError):
    """Training met a NaN/Inf it was configured not to get past."""


class InjectedStop(Exception):
    """``stop_after@S`` (tests only): the run stopped after step ``step``, whose loss was ``loss``."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"stopped after step {step} ({FAULTS_ENV}); its loss was {loss}")
        self.step, self.loss = step, loss


def find_non_finite(tree: Any, where: str = "") -> str | None:
    """The dotted name of the first floating tensor in ``tree`` holding NaN/Inf, or None.

    Walks dicts, lists and tuples; DTensors are checked on their local shard.
    """
    if isinstance(tree, torch.Tensor):
        local = tree.to_local() if hasattr(tree, "to_local") else tree
        if local.is_floating_point() and not torch.isfinite(local).all():
            return where or "<tensor>"
    elif isinstance(tree, dict):
        for key, value in tree.items():
            found = find_non_finite(value, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            if (found := find_non_finite(value, f"{where}[{i}]")) is not None:
                return found
    return None


@dataclass
class NonFiniteGuard:
    """Applies ``policy`` to non-finite steps and remembers what it did."""

    policy: Policy = "stop"
    max_rollbacks: int = 3
    rollbacks: int = 0
    skip_steps: set[int] = field(default_factory=set)  # steps to skip when replayed
    events: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"on_nonfinite ({self.policy!r}) must be one of {POLICIES}")
        if self.max_rollbacks < 0:
            raise ValueError(f"max_rollbacks ({self.max_rollbacks}) must be >= 0")

    def forced_skip(self, step: int) -> bool:
        """True for a step that went wrong before a rollback: it is skipped on the replay."""
        return step in self.skip_steps

    def decide(self, step: int, what: str, *, can_skip: bool = True) -> Literal["skip", "rollback"]:
        """The action for a non-finite ``what`` at ``step``; raises under ``stop``."""
        hint = "set run.on_nonfinite=skip or rollback to continue past such steps"
        if self.policy == "stop":
            raise NonFiniteError(f"non-finite {what} at step {step}; training stopped ({hint})")
        if self.policy == "skip":
            if not can_skip:
                raise NonFiniteError(
                    f"non-finite {what} at step {step}: the weights themselves are bad, which "
                    "skipping cannot undo; training stopped (use run.on_nonfinite=rollback)"
                )
            self.events.append({"step": step, "skipped": what})
            return "skip"
        if self.rollbacks >= self.max_rollbacks:
            raise NonFiniteError(
                f"non-finite {what} at step {step} after {self.rollbacks} rollback(s) "
                f"(run.max_rollbacks={self.max_rollbacks}); training stopped"
            )
        self.rollbacks += 1
        self.skip_steps.add(step)
        self.events.append({"step": step, "rolled_back": what})
        return "rollback"


def _parse_steps(text: str, entry: str) -> set[int]:
    try:
        return {int(s) for s in text.split(",") if s.strip()}
    except ValueError as e:
        raise ValueError(f"{FAULTS_ENV}: bad step list in {entry!r}") from e


@dataclass
class FaultInjection:
    """Test-only faults read from ``AVBLOCKS_FAULTS`` (see the module docstring)."""

    nan_loss_steps: set[int] = field(default_factory=set)
    nan_weights_steps: set[int] = field(default_factory=set)
    pad_checkpoint_mb: float = 0.0
    stop_after: int | None = None

    @classmethod
    def from_env(cls, environ=None) -> "FaultInjection":
        text = (os.environ if environ is None else environ).get(FAULTS_ENV, "")
        faults = cls()
        for entry in (e.strip() for e in text.split(";")):
            if not entry:
                continue
            if entry.startswith("nan_loss@"):
                faults.nan_loss_steps |= _parse_steps(entry[len("nan_loss@"):], entry)
            elif entry.startswith("nan_weights@"):
                faults.nan_weights_steps |= _parse_steps(entry[len("nan_weights@"):], entry)
            elif entry.startswith("pad_checkpoint_mb="):
                faults.pad_checkpoint_mb = float(entry.split("=", 1)[1])
            elif entry.startswith("stop_after@"):
                faults.stop_after = min(_parse_steps(entry[len("stop_after@"):], entry))
            else:
                raise ValueError(f"{FAULTS_ENV}: unknown fault {entry!r}")
        return faults

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if step in self.nan_loss_steps else loss

    def weights(self, step: int, model: nn.Module) -> None:
        if step in self.nan_weights_steps:
            self.nan_weights_steps.discard(step)
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")

    def stop(self, step: int, loss: torch.Tensor | float) -> None:
        if step == self.stop_after:
            raise InjectedStop(step, float(loss))

    def pad(self, state: dict[str, Any]) -> dict[str, Any]:
        if self.pad_checkpoint_mb <= 0:
            return state
        n = int(self.pad_checkpoint_mb * 2**20) // 4
        return state | {"_injected_padding": torch.ones(n)}


def remove_stale_temporaries(directory: str | os.PathLike, names: Iterable[str] = ("step_",)) -> list[Path]:
    """Delete temporaries a killed save left in a checkpoint folder; return them.

    Only the names the checkpoint writers make are touched, and only in ``directory``:
    ``.step_XXXXXXXX.<hex>.tmp.pt`` files (:func:`avblocks.config.atomic_path`) and
    ``.step_XXXXXXXX.tmp`` folders (:func:`recipes.common.distributed.save_sharded`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        name = path.name
        if not (name.startswith(".") and any(name[1:].startswith(n) for n in names)):
            continue
        if path.is_file() and ".tmp." in name:
            path.unlink(missing_ok=True)
            removed.append(path)
        elif path.is_dir() and name.endswith(".tmp"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
