"""Batches that keep a GPU busy: the one data loader every trainer reads its steps through.

:func:`step_loader` is a ``torch.utils.data.DataLoader`` over this rank's slice of every
step's global batch (:class:`~recipes.common.schedule.StepBatchSampler` cut by
:class:`~recipes.common.distributed.ShardedBatchSampler`), with

- ``num_workers`` worker processes (``data.num_workers``): items (media decoding, latent
  rows read from a memory-mapped cache) are made in the workers while the device computes;
  ``0`` makes them in this process, as before;
- pinned memory when the device is a GPU (:func:`avblocks.device.pin_memory`), so the
  trainer's ``non_blocking`` copy overlaps the compute; persistent workers (kept for the
  whole run instead of restarted);
- **every batch a pure function of (seed, step)**, whatever the number of workers and
  wherever a run resumes: this rank's items of step ``s`` are made with the global RNGs
  (torch's CPU generator, Python's, NumPy's) seeded from ``(seed, s, rank)`` and restored
  afterwards (:class:`StepSeededItems`; one save and restore per batch, about half a
  millisecond, most of it NumPy's). The built-in datasets draw nothing from the global RNGs,
  so for them this changes nothing; a dataset with random augmentations stays reproducible
  and resumes exactly. The loader's own seed comes from a generator seeded with ``seed``
  (drawn from the global RNG it would shift the stream a resumed run restores).
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from avblocks.config_rules import CHANGEABLE, in_range
from avblocks.device import pin_memory
from recipes.common.distributed import DistContext, ShardedBatchSampler
from recipes.common.schedule import StepBatchSampler

__all__ = ["LoaderConfig", "ONE_PROCESS", "StepSeededItems", "batch_seed", "step_loader"]

ONE_PROCESS = DistContext()
"""The context of a run without a process group, on the CPU."""


@dataclass
class LoaderConfig:
    """The ``data`` section of a recipe that reads rows it has already encoded (latents):
    only how many loader processes read them."""

    # loader processes making batches while the model trains (0: none)
    num_workers: Annotated[int, in_range(0, 256), CHANGEABLE] = 0


def batch_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of rank ``rank``'s items in step ``step`` of a run seeded ``seed`` (63 bits)."""
    return ((seed * 1_000_003 + step) * 2_147_483_659 + rank) & (2**63 - 1)


class _TaggedBatches(Sampler[list[tuple[int, int]]]):
    """A batch sampler's batches of steps ``start, start + 1, ...`` as ``(step, index)`` pairs."""

    def __init__(self, batches: Sampler[list[int]], start: int):
        self.batches, self.start = batches, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step, batch in enumerate(self.batches, start=self.start):
            yield [(step, i) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


class StepSeededItems(Dataset):
    """``dataset`` fetched a batch at a time as ``(step, index)`` pairs, under global RNGs
    seeded with :func:`batch_seed` and restored afterwards (see the module docstring). A
    dataset with ``__getitems__`` (a vectorised gather) gets the batch's indices at once."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0):
        self.dataset, self.seed, self.rank = dataset, seed, rank

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        step, indices = keys[0][0], [i for _, i in keys]
        state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            seed = batch_seed(self.seed, step, self.rank)
            torch.default_generator.manual_seed(seed)  # the CPU's alone: a GPU's stream is left as it is
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                gather = getattr(self.dataset, "__getitems__", None)
                return gather(indices) if gather else [self.dataset[i] for i in indices]
            finally:
                random.setstate(state[0])
                np.random.set_state(state[1])


def step_loader(dataset: Dataset, *, batch_size: int, total_steps: int, start_step: int, seed: int,
                ctx: DistContext = ONE_PROCESS, num_workers: int = 0) -> DataLoader:
    """This rank's batches of steps ``start_step ..`` (see the module docstring); on
    ``ctx.device`` a GPU, pinned. ``num_workers=0`` and one process give exactly the batches
    of a plain ``DataLoader(dataset, batch_sampler=StepBatchSampler(...))``."""
    if num_workers < 0:
        raise ValueError(f"num_workers ({num_workers}) must be >= 0")
    steps = StepBatchSampler(num_items=len(dataset), batch_size=batch_size,  # type: ignore[arg-type]
                             total_steps=total_steps, seed=seed, start_step=start_step)
    mine = ShardedBatchSampler(steps, rank=ctx.rank, world_size=ctx.world_size)
    workers = {"num_workers": num_workers, "persistent_workers": True, "prefetch_factor": 4} if num_workers else {}
    return DataLoader(StepSeededItems(dataset, seed, ctx.rank), batch_sampler=_TaggedBatches(mine, start_step),
                      generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory(ctx.device),
                      **workers)

