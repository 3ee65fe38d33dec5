"""SHA-256 of saved files: recorded when a folder or checkpoint is written, checked on load.

One scheme for everything avblocks and its recipes save: pipeline folders
(:mod:`avblocks.pipelines.folder`, ``pipeline.json``'s ``files``), model folders
(:mod:`avblocks.saveload`, ``config.json``'s ``sha256``), training checkpoints
(:mod:`recipes.common.checkpoint`, a ``.sha256`` record next to each file) and sharded
checkpoints (``checksums.json`` inside each folder). A flipped byte, a truncated copy or a
file swapped in from another save then fails on load with the file named, instead of loading
one changed weight silently.

The functions here return what is wrong as text (or nothing); each caller raises its own
error type with it.
"""

import hashlib
import json
import os
from pathlib import Path

__all__ = ["MANIFEST_NAME", "folder_digests", "folder_problems", "mismatch", "read_manifest_digests",
           "sha256", "write_manifest"]

MANIFEST_NAME = "checksums.json"
"""The file a folder of checked files lists them in (name -> SHA-256)."""


def sha256(path: "str | os.PathLike[str]", chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def mismatch(path: "str | os.PathLike[str]", expected: str, source: str) -> str | None:
    """Why ``path`` is not the file ``source`` recorded with SHA-256 ``expected`` (None: it is)."""
    if not os.path.isfile(path):
        return f"{path} is missing (listed in {source})"
    actual = sha256(path)
    if actual != expected:
        return f"{path} is damaged: its SHA-256 is {actual}, {source} records {expected}"
    return None


def folder_digests(folder: "str | os.PathLike[str]", skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative posix path: SHA-256}`` of every file under ``folder`` (sorted) but ``skip``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in skip}


def folder_problems(folder: "str | os.PathLike[str]", digests: dict[str, str], source: str) -> list[str]:
    """What differs between ``folder`` and the ``digests`` recorded in ``source``: missing or
    damaged files (the names are taken as paths inside ``folder``; callers that read digests
    from untrusted folders check the names first)."""
    folder = Path(folder)
    return [why for name, digest in digests.items() if (why := mismatch(folder / name, digest, source))]


def write_manifest(folder: "str | os.PathLike[str]") -> Path:
    """Record every file of ``folder`` in ``folder/checksums.json`` (for a folder that is still
    being built under a temporary name: the caller renames it into place afterwards)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(folder_digests(folder, skip=(MANIFEST_NAME,)), indent=1) + "\n")
    return path


def read_manifest_digests(folder: "str | os.PathLike[str]") -> tuple[dict[str, str] | None, str | None]:
    """``(digests, None)`` from ``folder/checksums.json``, or ``(None, why)`` when it cannot be
    used (missing, not JSON, not a mapping of names to digests)."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None, f"{path} is missing (no SHA-256 recorded)"
    try:
        digests = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{path} cannot be read ({type(e).__name__}: {e})"
    if not (isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())):
        return None, f"{path} does not map file names to SHA-256 digests"
    return digests, None
