"""Batches: the global batch, this rank's slice of it, and the micro-batches of that slice.

- **The batch is global.** ``optim.batch_size`` is the number of clips per optimizer step,
  summed over ranks and micro-batches. The step's indices come from
  :class:`~recipes.common.schedule.StepBatchSampler` (a pure function of ``(seed, step)``)
  and rank ``r`` of ``W`` takes the contiguous slice ``[r*B/W, (r+1)*B/W)``
  (:func:`shard_indices`). Gradient accumulation then cuts the rank's slice into ``k``
  contiguous micro-batches (:func:`split_micro_batches`) and scales each micro-batch loss by
  ``1/k``; DDP/FSDP average gradients over ranks. The gradient of an optimizer step is
  therefore the gradient of the mean loss over the global batch, whatever ``W`` and ``k``
  are, which is what makes the 2-process run match a single-process run.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

__all__ = ["ShardedBatchSampler", "shard_indices", "split_batch", "split_micro_batches"]


def shard_indices(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous slice of a global batch (its size must divide evenly)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank ({rank}) must lie in [0, world_size={world_size})")
    if len(indices) % world_size:
        raise ValueError(
            f"global batch size ({len(indices)}) must be divisible by the number of ranks "
            f"({world_size})"
        )
    n = len(indices) // world_size
    return list(indices[rank * n : (rank + 1) * n])


def split_micro_batches(indices: Sequence[int], num: int) -> list[list[int]]:
    """``num`` contiguous equal micro-batches (gradient accumulation)."""
    if num < 1:
        raise ValueError(f"number of micro-batches ({num}) must be >= 1")
    if len(indices) % num:
        raise ValueError(
            f"batch of {len(indices)} cannot be cut into {num} equal micro-batches"
        )
    n = len(indices) // num
    return [list(indices[i * n : (i + 1) * n]) for i in range(num)]


def split_batch(batch: Any, num: int) -> list[Any]:
    """A collated batch (dict / list / tensor) cut into ``num`` contiguous micro-batches.

    The same cut as :func:`split_micro_batches` on the indices; ``num=1`` returns ``[batch]``
    unchanged (the single-process path is untouched).
    """
    if num < 1:
        raise ValueError(f"number of micro-batches ({num}) must be >= 1")
    if num == 1:
        return [batch]
    if isinstance(batch, dict):
        parts = {k: split_batch(v, num) for k, v in batch.items()}
        return [{k: parts[k][i] for k in batch} for i in range(num)]
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0 or batch.shape[0] % num:
            raise ValueError(
                f"batch of {batch.shape[0] if batch.ndim else 0} cannot be cut into {num} "
                "equal micro-batches"
            )
        return list(batch.chunk(num))
    if isinstance(batch, (list, tuple)):
        return [list(p) for p in split_micro_batches(batch, num)]
    raise TypeError(f"cannot split a batch of type {type(batch).__name__}")


class ShardedBatchSampler(Sampler[list[int]]):
    """Yields this rank's slice of every batch of a batch sampler (e.g. StepBatchSampler).

    With ``world_size=1`` it yields the batches unchanged.
    """

    def __init__(self, batches: Sampler[list[int]], *, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank ({rank}) must lie in [0, world_size={world_size})")
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield shard_indices(batch, self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]
