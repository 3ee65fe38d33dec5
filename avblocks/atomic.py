"""The one atomic file writer of avblocks: temporary file, fsync, rename.

Every file the library or a recipe writes (checkpoints, ``config.json`` +
``model.safetensors``, mp4 files, PNG previews, index caches, JSON logs) goes through
:func:`atomic_path`, so a crash never leaves a half-written file and never damages the
previous file at the same path.

Choices (documented because callers rely on them):

- The temporary file lives in the destination folder (so ``os.replace`` is an atomic rename
  on one file system), starts with a dot (out of casual listings) and ends with the final
  suffix (``.step_00000004.0123456789ab.tmp.pt``), so writers that pick a format from the
  extension (PyAV: ``.mp4``) still work on it.
- On success the temporary file is fsynced, renamed over the final path, and the folder is
  fsynced (where the platform allows) so the rename itself is durable.
- If the writer raises, the temporary file is removed and the final path is left exactly
  as it was. The parent folder must already exist.
- :func:`atomic_write_json` refuses NaN and infinities (``allow_nan=False``): they are not
  JSON, and a reader in another language would choke on them. With ``nan_as_null=True`` they
  are written as ``null``, and a top-level object gains ``"nonfinite": {key path: "nan" |
  "inf" | "-inf"}`` saying which values were undefined and what they were.
"""

import contextlib
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write", "atomic_write_text", "atomic_write_json", "finite_or_none",
           "nonfinite_paths"]


def _temp_name(path: Path) -> Path:
    # Keep the suffix last so writers that pick a format from the extension (PyAV: ".mp4")
    # still work on the temporary file; leading dot keeps it out of casual listings.
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the rename durable; not every platform/file system supports it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _temp_path(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; remove it if the block raises."""
    tmp = _temp_name(path)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager: write to the yielded temporary path; on success it replaces ``path``.

    The temporary file lives in the same folder as ``path`` (so ``os.replace`` is an atomic
    rename on one file system) and ends with the same suffix. On success it is fsynced,
    renamed over ``path`` and the folder is fsynced. If the block raises, the temporary file
    is removed and ``path`` is left exactly as it was. The parent folder must exist.

    >>> with atomic_path("ckpt/step_100.pt") as tmp:
    ...     torch.save(state, tmp)
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"parent folder of {str(path)!r} does not exist")
    with _temp_path(path) as tmp:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create the temporary file {tmp}")
        _fsync_file(tmp)
        os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], Any]) -> Path:
    """Write a file atomically: ``write_fn(tmp_path)`` writes it, then it replaces ``path``.

    See :func:`atomic_path`. Returns ``path`` as a :class:`~pathlib.Path`.

    >>> atomic_write("out/weights.pt", lambda p: torch.save(state, p))
    """
    with atomic_path(path) as tmp:
        write_fn(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path`` as a Path."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None`` (JSON's null), in dicts,
    lists and tuples at any depth: for reports where a number can be undefined (a score over
    no events)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def nonfinite_paths(obj: Any, where: str = "") -> dict[str, str]:
    """``{dotted key path: "nan" | "inf" | "-inf"}`` of every non-finite float in ``obj``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {where or "<value>": repr(obj)}
    found: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            found |= nonfinite_paths(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found |= nonfinite_paths(v, f"{where}[{i}]")
    return found


def atomic_write_json(path: str | os.PathLike, obj: Any, *, nan_as_null: bool = False) -> Path:
    """Write ``obj`` as indented JSON (plus a final newline) to ``path`` atomically.

    Raises ValueError naming ``path`` if ``obj`` holds NaN or an infinity, before anything
    is written: they are not JSON. ``nan_as_null=True`` writes them as ``null`` instead
    (:func:`finite_or_none`), and says which they were in a top-level ``"nonfinite"`` entry
    when ``obj`` is a dict (see the module docstring).
    """
    if nan_as_null:
        reasons = nonfinite_paths(obj)
        obj = finite_or_none(obj)
        if reasons and isinstance(obj, dict):
            obj = obj | {"nonfinite": reasons}
    try:
        text = json.dumps(obj, indent=2, allow_nan=False)
    except ValueError as e:
        raise ValueError(
            f"cannot write {str(path)!r} as JSON (NaN and infinities are refused): {e}"
        ) from e
    return atomic_write_text(path, text + "\n")
