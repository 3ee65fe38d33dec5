"""A training set encoded once, written in shards, read memory-mapped.

A denoiser trains on the latents of a frozen autoencoder; encoding every clip once and
keeping the result beats re-encoding at every step. The cache must not need the whole set
in memory, neither to write nor to read, so a set larger than RAM trains:

- **written in shards** (:func:`write_shards`): rows are written ``shard_rows`` at a time, as
  they are encoded, each shard one ``shard_XXXXX.pt`` file holding a dict of equal-length
  tensors (``latents``, ``labels``); the folder is built as ``.<name>.tmp`` and renamed once
  the index (``index.json``: rows per shard) is in it, so an interrupted encode never leaves
  a cache under the final name.
- **read memory-mapped** (:class:`ShardedRows`): each shard is opened with
  ``torch.load(mmap=True, weights_only=True)``; the operating system pages rows in when they
  are indexed and can drop them again, so resident memory follows the batches, not the set.
  Indexing with a list of row numbers gathers those rows into one ordinary tensor (a copy);
  :class:`RowsDataset` makes the cache a dataset whose items a data loader's workers read.
"""

import bisect
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from avblocks.device import HOST

__all__ = ["INDEX", "RowsDataset", "ShardedRows", "open_shards", "write_shards"]

INDEX = "index.json"


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.pt"


def write_shards(folder: str | os.PathLike, batches: Iterable[Mapping[str, Tensor]], *,
                 shard_rows: int = 4096) -> Path:
    """Write the rows of ``batches`` (dicts of tensors with equal first dims) into ``folder``.

    Rows are buffered until ``shard_rows`` are there, then written as one shard (moved to
    the CPU); returns ``folder``, which exists only once every shard and the index are
    written (an older folder of that name is replaced).
    """
    if shard_rows < 1:
        raise ValueError(f"shard_rows ({shard_rows}) must be >= 1")
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted encode
    tmp.mkdir(parents=True)
    rows: list[int] = []
    pending: dict[str, list[Tensor]] = {}
    keys: list[str] | None = None

    def flush(count: int) -> None:
        shard = {k: torch.cat(v)[:count].contiguous() for k, v in pending.items()}
        rest = {k: [torch.cat(v)[count:]] for k, v in pending.items()}
        torch.save(shard, tmp / _shard_name(len(rows)))
        rows.append(count)
        pending.clear()
        pending.update(rest)

    for batch in batches:
        if keys is None:
            keys = sorted(batch)
        if sorted(batch) != keys:
            raise ValueError(f"a batch has keys {sorted(batch)}, the first had {keys}")
        sizes = {len(batch[k]) for k in keys}
        if len(sizes) != 1:
            raise ValueError(f"the tensors of a batch have different lengths {sorted(sizes)}")
        for k in keys:
            pending.setdefault(k, []).append(batch[k].detach().to(HOST))
        while pending and sum(len(t) for t in pending[keys[0]]) >= shard_rows:
            flush(shard_rows)
    if pending and sum(len(t) for t in pending[keys[0]]):
        flush(sum(len(t) for t in pending[keys[0]]))
    if not rows:
        raise ValueError("no rows to cache: the batches were empty")
    (tmp / INDEX).write_text(json.dumps({"rows": rows, "keys": keys}) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


class ShardedRows:
    """Rows of one tensor spread over memory-mapped shards, indexed as if one tensor.

    ``rows[i]`` is row ``i``; ``rows[[i, j, ...]]`` (a list or 1-D tensor of ints) gathers
    rows into a new tensor in that order; ``rows[:]`` reads every row.
    """

    def __init__(self, shards: Sequence[Tensor]):
        if not shards:
            raise ValueError("no shards")
        tails = {tuple(s.shape[1:]) for s in shards}
        if len(tails) != 1 or len({s.dtype for s in shards}) != 1:
            raise ValueError(f"shards differ in row shape or dtype: {sorted(tails)}")
        self.shards = list(shards)
        self._starts = [0]
        for shard in shards:
            self._starts.append(self._starts[-1] + len(shard))

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.shards[0].shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.shards[0].dtype

    def __getitem__(self, index) -> Tensor:
        if isinstance(index, int):
            if not 0 <= index < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            shard = bisect.bisect_right(self._starts, index) - 1
            return self.shards[shard][index - self._starts[shard]]  # a view of the mapped file
        if isinstance(index, slice):
            index = range(len(self))[index]
        rows = index.tolist() if isinstance(index, Tensor) else [int(i) for i in index]
        if rows and not 0 <= min(rows) <= max(rows) < len(self):
            raise IndexError(f"row index out of range for {len(self)} rows")
        if len(self.shards) == 1:
            return self.shards[0][rows]
        # one gather per shard touched (plain Python bookkeeping: a batch is tens of rows)
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for position, row in enumerate(rows):
            shard = bisect.bisect_right(self._starts, row) - 1
            positions, local = by_shard.setdefault(shard, ([], []))
            positions.append(position)
            local.append(row - self._starts[shard])
        out = torch.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for shard, (positions, local) in by_shard.items():
            out[positions] = self.shards[shard][local]
        return out


def open_shards(folder: str | os.PathLike) -> dict[str, ShardedRows] | None:
    """The cache in ``folder`` as ``{key: ShardedRows}``, memory-mapped; None when there is no
    complete cache there."""
    folder = Path(folder)
    if not (folder / INDEX).is_file():
        return None
    index = json.loads((folder / INDEX).read_text())
    shards = [torch.load(folder / _shard_name(i), mmap=True, weights_only=True, map_location=HOST)
              for i in range(len(index["rows"]))]
    for i, (shard, rows) in enumerate(zip(shards, index["rows"], strict=True)):
        if any(len(shard[k]) != rows for k in index["keys"]):
            raise ValueError(f"{folder / _shard_name(i)} does not hold the {rows} rows {INDEX} says")
    return {k: ShardedRows([s[k] for s in shards]) for k in index["keys"]}


class RowsDataset(Dataset):
    """Item ``i``: ``{key: row i}`` of every cached tensor (what a step loader's workers read)."""

    def __init__(self, cache: Mapping[str, ShardedRows]):
        self.cache = dict(cache)
        lengths = {len(v) for v in self.cache.values()}
        if len(lengths) != 1:
            raise ValueError(f"cached tensors differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(next(iter(self.cache.values())))

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.cache.items()}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Tensor]]:
        """Many items with one gather per tensor (what a data loader's fetcher calls)."""
        rows = {k: v[indices] for k, v in self.cache.items()}
        return [{k: v[j] for k, v in rows.items()} for j in range(len(indices))]
