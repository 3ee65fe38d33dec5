"""Training-state checkpoints: atomic, complete, loaded without pickle execution.

A checkpoint is one file ``step_00001234.pt`` holding everything a run needs to continue
exactly: model, EMA, optimizer and scheduler states, the step (which is also the data
position, see :mod:`recipes.common.schedule`) and the RNG states. It is written with
:func:`avblocks.config.atomic_path` (temporary file, fsync, rename), so a crash mid-save
leaves the previous checkpoint intact; the last ``keep`` checkpoints are kept. Loading uses
``torch.load(weights_only=True)``. A state whose tensors are not finite is never written.
"""

import random
import re
from pathlib import Path
from typing import Any

import torch

from avblocks.atomic import atomic_path
from avblocks.device import HOST
from recipes.common.faults import find_non_finite

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
        for old in self.checkpoints()[: -self.keep]:
            old.unlink()
        return path

    def load_latest(self, map_location: "str | torch.device" = HOST) -> dict[str, Any] | None:
        """The newest checkpoint's state (on the CPU: ``load_state_dict`` copies each tensor
        to the device of the tensor it fills), or None when there is none."""
        paths = self.checkpoints()
        if not paths:
            return None
        return torch.load(paths[-1], map_location=map_location, weights_only=True)
