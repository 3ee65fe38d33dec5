"""Safe loading of sharded checkpoints: DCP's file reader without its code-running unpickler.

DCP's stock reader unpickles ``.metadata`` with plain :mod:`pickle`, which would run code
from a crafted file. :class:`SafeFileSystemReader` reads it with an unpickler that only
admits DCP's own metadata classes and a few torch types; tensor payloads and non-tensor
items are read by DCP with ``torch.load(weights_only=True)``.
"""

import io
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

__all__ = ["SafeFileSystemReader", "UnsafeCheckpointError"]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file refers to something other than plain weights and metadata."""


# What DCP's .metadata pickle may name: its own dataclasses, torch sizes/dtypes, paths.
_SAFE_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
}
_SAFE_MODULES = {"torch.distributed.checkpoint.metadata"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _SAFE_MODULES or (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint metadata: it names {module}.{name}, which is not a "
            "checkpoint metadata type (a crafted file could run code through it)"
        )


def _safe_metadata(data: bytes) -> Any:
    return _RestrictedUnpickler(io.BytesIO(data)).load()


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader with ``.metadata`` read by a restricted unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = _safe_metadata(f.read())
        if not isinstance(metadata, Metadata):
            raise UnsafeCheckpointError(
                f"{path} does not hold checkpoint metadata (got {type(metadata).__name__})"
            )
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata
