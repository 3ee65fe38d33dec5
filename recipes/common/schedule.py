"""Batch order and learning-rate schedule, both pure functions of the global step.

Making the batch at step ``s`` a function of ``(seed, s)`` alone is what makes resume exact:
a run restarted at step ``s`` draws the same batches as a run that never stopped, without
replaying the data loader.
"""

import math

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index batches of steps ``start_step, ..., total_steps - 1``.

    Epoch ``e`` is a permutation of the dataset drawn from ``seed + e``; each epoch is cut
    into ``len(dataset) // batch_size`` full batches (the remainder is dropped, so every
    batch has the same size).
    """

    def __init__(
        self, *, num_items: int, batch_size: int, total_steps: int, seed: int = 0, start_step: int = 0
    ):
        if batch_size < 1 or num_items < batch_size:
            raise ValueError(
                f"need 1 <= batch_size ({batch_size}) <= number of items ({num_items})"
            )
        if not 0 <= start_step <= total_steps:
            raise ValueError(f"start_step ({start_step}) must lie in [0, total_steps={total_steps}]")
        self.num_items, self.batch_size = num_items, batch_size
        self.total_steps, self.seed, self.start_step = total_steps, seed, start_step
        self.steps_per_epoch = num_items // batch_size

    def batch(self, step: int) -> list[int]:
        epoch, slot = divmod(step, self.steps_per_epoch)
        order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + epoch))
        return order[slot * self.batch_size : (slot + 1) * self.batch_size].tolist()

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.total_steps - self.start_step


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
