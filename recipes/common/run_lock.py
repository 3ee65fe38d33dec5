"""One writer per run folder: an advisory lock taken before anything is written into it.

Two trainers on one ``run.output_dir`` used to interleave ``log.jsonl``, overwrite each
other's checkpoints and delete each other's temporary files. Every trainer now holds the
folder's lock from :func:`recipes.common.loop.start_run` to the end of the run.

Choices:

- **The lock file** is ``<folder>/run.lock``: ``{"host", "pid", "started"}`` of the holder,
  written when the lock is taken and removed when it is released. The lock itself is
  ``fcntl.flock`` on that file, held through an open descriptor for the holder's lifetime: the
  kernel drops it when the process dies, however it dies (SIGKILL included), so a lock can only
  be *held* by a live process. The record is for the messages.
- **A second run is refused** (:class:`RunFolderLocked`, naming the holder's host, pid and
  start time) when the ``flock`` is taken. Nothing is written by the refused run.
- **A stale lock** (the file is there, with a record, but nobody holds the ``flock``) was left
  by a run that died. When its record names this host, the lock is taken over and the
  takeover is printed; when it names another host, the run is refused (that host may be using
  a file system without working locks): delete the file once that run is known to be dead.
- **Released** at the end of :func:`recipes.common.loop.run_entry_point` (also on error), at
  interpreter exit, or by the kernel when the process dies. A process that already holds a
  folder's lock (a trainer called twice in one process, as the demo does) holds it again
  without blocking itself.
- **Temporaries**: only the holder removes temporary files from the run folder (the
  leftovers of saves interrupted in an earlier holder's life: the holder is the only live
  writer, so no temporary there can belong to a running save): :func:`remove_leftovers`
  refuses to run in a folder this process does not hold.
- **torchrun**: rank 0 holds the lock; the other ranks never write outside their checkpoint
  shards (see :func:`recipes.common.loop.start_run`).
"""

import atexit
import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from recipes.common.faults import remove_stale_temporaries

__all__ = ["LOCK_NAME", "RunFolderLocked", "RunLock", "hold", "holds", "release", "release_all",
           "remove_leftovers"]

LOCK_NAME = "run.lock"


class RunFolderLocked(RuntimeError):
    """Another run writes into this folder (or a dead run's lock cannot be taken over)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(record: dict) -> str:
    return (f"pid {record.get('pid')} on host {record.get('host')!r}, started "
            f"{record.get('started', 'at an unknown time')}")


class RunLock:
    """The lock of one run folder, held by this process (see the module docstring)."""

    def __init__(self, folder: Path, fd: int, record: dict):
        self.folder, self.fd, self.record = folder, fd, record

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    @classmethod
    def acquire(cls, folder: "str | os.PathLike[str]") -> "RunLock":
        """Create ``folder`` if needed and take its lock; :class:`RunFolderLocked` if held."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                record = _read_record(fd)
                os.close(fd)
                raise RunFolderLocked(
                    f"{folder} is in use by another run ({_describe(record)}; lock file {path}): "
                    "two runs writing one folder would mix their checkpoints and logs. Wait for it, "
                    "stop it, or give this run another run.output_dir") from None
            # the holder before us may have removed the file between our open and our flock
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        previous = _read_record(fd)
        if previous:
            try:
                _take_over(previous, path)
            except RunFolderLocked:
                os.close(fd)
                raise
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        return cls(folder, fd, record)

    def release(self) -> None:
        """Remove the lock file and drop the lock (the file goes first: see :meth:`acquire`)."""
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


def _read_record(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode()
        record = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {"host": "?", "pid": "?", "started": "(unreadable lock file)"}
    return record if isinstance(record, dict) else {}


def _take_over(previous: dict, path: Path) -> None:
    """A record with no live holder: take it over if it was this host's, else refuse."""
    here = socket.gethostname()
    if previous.get("host") != here:
        raise RunFolderLocked(
            f"{path} records a run on another host ({_describe(previous)}) that does not hold the lock "
            "from here; if that run is dead, delete the lock file and start again")
    pid = previous.get("pid")
    state = "is no longer running" if isinstance(pid, int) and not _pid_alive(pid) else "does not hold it"
    print(f"taking over the lock of {path.parent}: its holder ({_describe(previous)}) {state}")


_held: dict[Path, RunLock] = {}


def hold(folder: "str | os.PathLike[str]") -> RunLock:
    """This process's lock of ``folder``: taken now, or the one it already holds."""
    key = Path(folder).resolve()
    if key not in _held:
        _held[key] = RunLock.acquire(folder)
    return _held[key]


def holds(path: "str | os.PathLike[str]") -> bool:
    """Whether this process holds the lock of ``path`` or of a folder it lies in."""
    path = Path(path).resolve()
    return any(path == folder or folder in path.parents for folder in _held)


def release(folder: "str | os.PathLike[str]") -> None:
    """Release this process's lock of ``folder`` (if it holds it)."""
    if (lock := _held.pop(Path(folder).resolve(), None)) is not None:
        lock.release()


def release_all() -> None:
    """Release every lock this process holds."""
    while _held:
        _held.popitem()[1].release()


atexit.register(release_all)


def remove_leftovers(directory: "str | os.PathLike[str]") -> list[Path]:
    """Remove the temporaries interrupted saves left in ``directory`` (a checkpoint folder of
    a run this process holds: see the module docstring) and return them."""
    if not holds(directory):
        raise RunFolderLocked(f"{directory}: only the holder of the run folder's lock removes its "
                              "temporary files, and this process does not hold it")
    return remove_stale_temporaries(directory)
