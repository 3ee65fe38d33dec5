"""The trainers' checkpoints: one file (one process, DDP) or a sharded folder (FSDP2).

:class:`TrainCheckpoints` is what the trainers save and resume through: one
``step_XXXXXXXX.pt`` file (one process, DDP) or a sharded ``step_XXXXXXXX.dcp`` folder
(FSDP2), with every rank's RNG state.
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avblocks.saveload import CheckpointError, reading
from recipes.common.checkpoint import (
    CheckpointManager,
    Damaged,
    capture_rng,
    newest_intact,
    restore_rng,
    set_aside,
)
from recipes.common.distributed.collectives import any_rank, barrier, gather_objects
from recipes.common.distributed.dcp_checkpoints import (
    latest_sharded,
    load_sharded,
    save_sharded,
    sharded_checkpoints,
    verify_sharded,
)
from recipes.common.distributed.process_group import DistContext, rank_seed
from recipes.common.distributed.safe_dcp_reader import SafeFileSystemReader
from recipes.common.distributed.wrapping import unwrap
from recipes.common.faults import find_non_finite

__all__ = ["TrainCheckpoints"]


class TrainCheckpoints:
    """Saves and restores a run's whole state; the one object the trainers talk to.

    ``parts`` maps names to objects with ``state_dict`` / ``load_state_dict``: ``"model"``
    and ``"optimizer"`` (required), ``"ema"``, ``"scheduler"`` and any extra pairs
    (``"discriminator"`` + ``"discriminator_optimizer"``). ``pairs`` says which optimizer
    belongs to which module (needed for sharded optimizer state).

    - ``sharded=False`` (one process, DDP): :class:`CheckpointManager` files
      ``step_XXXXXXXX.pt`` with keys ``{name: part.state_dict()}``, ``step``, ``rng`` (rank 0's
      RNG) and, with more than one rank, ``rng_ranks`` (every rank's). Rank 0 writes.
    - ``sharded=True`` (FSDP2): :func:`save_sharded` folders ``step_XXXXXXXX.dcp`` holding
      the model/optimizer state from ``get_state_dict`` (DTensor shards), the other parts'
      state dicts, and each rank's RNG under ``rng_rank{r}``. Every rank writes its shards.

    :meth:`save` is collective; it returns the name of a non-finite model/EMA tensor instead
    of writing (the same answer on every rank), else None. :meth:`restore` loads the newest
    *intact* checkpoint into ``parts`` and returns its step (None when there is none): newer
    ones whose SHA-256 or loading fails are reported (file and check) and set aside as
    ``<name>.damaged`` by rank 0 (:mod:`recipes.common.checkpoint`); with none intact it raises
    a :class:`~avblocks.saveload.CheckpointError` naming each. A rank whose RNG was not saved
    (the run had fewer ranks) starts a fresh stream from :func:`rank_seed` ``(seed + step, rank)``.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int, ctx: DistContext,
                 sharded: bool = False, seed: int = 0, pad=lambda state: state,
                 pairs: Sequence[tuple[str, str]] = (("model", "optimizer"),)):
        self.directory, self.keep, self.ctx = Path(directory), keep, ctx
        self.sharded, self.seed, self.pad, self.pairs = sharded, seed, pad, tuple(pairs)
        self.files = CheckpointManager(self.directory, keep=keep)

    def latest(self) -> Path | None:
        if self.sharded:
            return latest_sharded(self.directory)
        found = self.files.checkpoints()
        return found[-1] if found else None

    # ---- saving -----------------------------------------------------------------------------

    def _sharded_state(self, parts: dict[str, Any]) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        state: dict[str, Any] = {}
        paired = set()
        for module_name, optim_name in self.pairs:
            if module_name in parts:
                model_state, optim_state = get_state_dict(parts[module_name], parts[optim_name])
                state[module_name], state[optim_name] = model_state, optim_state
                paired |= {module_name, optim_name}
        for name, part in parts.items():
            if name not in paired:
                state[name] = part.state_dict()
        return state

    def save(self, step: int, parts: dict[str, Any]) -> str | None:
        ctx = self.ctx
        if self.sharded:
            state = self._sharded_state(parts)
        else:
            state = {name: unwrap(part).state_dict() if isinstance(part, nn.Module) else
                     part.state_dict() for name, part in parts.items()}
        bad = find_non_finite(state.get("model"), "model") or find_non_finite(state.get("ema"), "ema")
        if any_rank(bad is not None):
            return bad or "a tensor on another rank"
        if self.sharded:
            state[f"rng_rank{ctx.rank}"] = capture_rng()
            save_sharded(self.directory, step, self.pad(state), keep=self.keep)
            return None
        rngs = gather_objects(capture_rng())
        if ctx.is_main:
            state["rng"] = rngs[0]
            if ctx.enabled:
                state["rng_ranks"] = rngs
            self.files.save(step, self.pad(state))
        barrier()
        return None

    # ---- restoring --------------------------------------------------------------------------

    def _restore_rng(self, own: dict | None, first: dict, step: int) -> None:
        if own is not None:
            restore_rng(own)
            return
        restore_rng(first)
        if self.ctx.rank > 0:  # saved with fewer ranks: a fresh stream of this rank's own
            torch.manual_seed(rank_seed(self.seed + step, self.ctx.rank))

    def _set_aside(self, damaged: Damaged) -> None:
        """Every rank has chosen (barrier); rank 0 reports and renames the damaged ones."""
        barrier()
        if self.ctx.is_main:
            for path, why in damaged:
                print(f"checkpoint {path.name} is damaged and was set aside as "
                      f"{set_aside(path).name}: {why}")

    def restore(self, parts: dict[str, Any]) -> int | None:
        barrier()  # rank 0 may have just written the checkpoint
        if not self.sharded:
            if (found := self.files.load_newest()) is None:
                return None
            state, path, damaged = found
            self._set_aside(damaged)
            for name, part in parts.items():
                target = unwrap(part) if isinstance(part, nn.Module) else part
                if name not in state:
                    raise CheckpointError(f"{path} holds no {name!r} state (it has {sorted(state)})")
                with reading(path):
                    target.load_state_dict(state[name])
            ranks = state.get("rng_ranks")
            if ranks is not None and len(ranks) == self.ctx.world_size:
                own = ranks[self.ctx.rank]
            else:  # one process (rank 0 is the run's own stream), or another number of ranks
                own = state["rng"] if self.ctx.rank == 0 else None
            self._restore_rng(own, state["rng"], state["step"])
            return state["step"]
        found = newest_intact(self.directory, sharded_checkpoints(self.directory), verify_sharded)
        if found is None:
            return None
        folder, _, damaged = found
        self._set_aside(damaged)
        from torch.distributed.checkpoint.state_dict import set_state_dict

        saved = SafeFileSystemReader(folder).read_metadata().state_dict_metadata
        template = self._sharded_state(parts)
        own_key = f"rng_rank{self.ctx.rank}"
        has_own = any(k.startswith(own_key + ".") for k in saved)
        template["step"] = -1
        template["rng_rank0"] = capture_rng()
        if has_own:
            template[own_key] = capture_rng()
        with reading(folder):
            state = load_sharded(folder, template)
        for module_name, optim_name in self.pairs:
            if module_name in parts:
                set_state_dict(parts[module_name], parts[optim_name],
                               model_state_dict=state[module_name], optim_state_dict=state[optim_name])
        paired = {n for pair in self.pairs for n in pair}
        for name, part in parts.items():
            if name not in paired:
                part.load_state_dict(state[name])
        self._restore_rng(state.get(own_key) if has_own else None, state["rng_rank0"], state["step"])
        return int(state["step"])
