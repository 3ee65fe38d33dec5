"""Sharded checkpoints (FSDP2) with ``torch.distributed.checkpoint`` (DCP).

**FSDP2 checkpoints are sharded** (:func:`save_sharded`): every rank writes its own shards
with ``torch.distributed.checkpoint`` into ``.step_XXXXXXXX.tmp/``; after a barrier rank 0
renames the folder to ``step_XXXXXXXX.dcp`` (so a crash mid-save never leaves a
half-written checkpoint under the final name) and keeps the last ``keep``. Before the rename,
rank 0 records the SHA-256 of every file in the folder's ``checksums.json``
(:mod:`avblocks.checksums`); :func:`verify_sharded` checks them. A sharded
checkpoint loads on any number of ranks, including one process with no process group
(:func:`load_sharded`): DCP reshards on load. Its metadata is read with
:class:`~recipes.common.distributed.safe_dcp_reader.SafeFileSystemReader`.
"""

import contextlib
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from avblocks.checksums import folder_problems, read_manifest_digests, write_manifest
from avblocks.saveload import CheckpointError
from recipes.common.distributed.collectives import any_rank, barrier
from recipes.common.distributed.safe_dcp_reader import SafeFileSystemReader
from recipes.common.faults import find_non_finite

__all__ = ["latest_sharded", "load_sharded", "save_sharded", "sharded_checkpoints", "verify_sharded"]

_SHARDED = re.compile(r"^step_(\d{8})\.dcp$")


def sharded_checkpoints(directory: str | os.PathLike) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _SHARDED.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_SHARDED.match(p.name).group(1)))


def latest_sharded(directory: str | os.PathLike) -> Path | None:
    found = sharded_checkpoints(directory)
    return found[-1] if found else None


def save_sharded(
    directory: str | os.PathLike, step: int, state: dict[str, Any], *, keep: int = 3
) -> Path:
    """Write ``state`` (DCP-compatible: tensors, DTensors, numbers) as ``step_XXXXXXXX.dcp``.

    Collective: every rank calls it with its own state (e.g. from
    ``torch.distributed.checkpoint.state_dict.get_state_dict``). ``state["model"]`` holding a
    NaN/Inf on any rank refuses the save on every rank (``FloatingPointError``).
    """
    if keep < 1:
        raise ValueError(f"keep ({keep}) must be at least 1")
    directory = Path(directory)
    bad = find_non_finite(state.get("model"), "model")
    if any_rank(bad is not None):
        raise FloatingPointError(
            f"refusing to save step {step}: {bad or 'a tensor on another rank'} holds NaN or Inf"
        )
    final = directory / f"step_{step:08d}.dcp"
    tmp = directory / f".step_{step:08d}.tmp"
    main = not dist.is_initialized() or dist.get_rank() == 0
    if main:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
    barrier()
    with warnings.catch_warnings():  # one process without a group is intended here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({**state, "step": step}, storage_writer=dcp.FileSystemWriter(tmp, sync_files=True),
                 no_dist=not dist.is_initialized())
    barrier()
    if main:
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        with contextlib.suppress(OSError):
            fd = os.open(directory, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        for old in sharded_checkpoints(directory)[:-keep]:
            shutil.rmtree(old)
    barrier()
    return final


def verify_sharded(path: str | os.PathLike) -> Path:
    """``path`` if every file its ``checksums.json`` records is there and intact, else a
    :class:`~avblocks.saveload.CheckpointError` naming the file and the check."""
    path = Path(path)
    digests, why = read_manifest_digests(path)
    if digests is None:
        raise CheckpointError(why)
    if problems := folder_problems(path, digests, str(path / "checksums.json")):
        raise CheckpointError("; ".join(problems))
    return path


def load_sharded(path: str | os.PathLike, state: dict[str, Any]) -> dict[str, Any]:
    """Fill ``state`` in place from a sharded checkpoint folder and return it.

    ``state`` names what to load and how it is laid out on this process (plain tensors in
    one process, DTensors under FSDP2); DCP reshards. Works with or without a process group.
    The folder's metadata is read with :class:`SafeFileSystemReader`.
    """
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"{path} is not a sharded checkpoint (no .metadata file)")
    reader = SafeFileSystemReader(path)
    reader.read_metadata()  # refuse a crafted file here: inside dcp.load the error is wrapped
    with warnings.catch_warnings():  # one process without a group is intended here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=reader, no_dist=not dist.is_initialized())
    return state
