"""A dataset of fixed-length sounding-video clips cut from every container under a folder.

Choices:

- **Files**: every regular file under ``root`` (recursive, sorted by relative path) whose
  extension (case-insensitive) is in ``extensions``; other files are ignored silently.
- **Classes and the held-out split** (:mod:`avblocks.data.folder_layout`): one class per
  top-level subfolder when all files lie in subfolders (``ImageFolder``'s convention; a
  folder with files at its top level is one class); ``split="train"`` / ``"held_out"`` with ``held_out`` (a
  fraction) and ``held_out_by`` (``"file"``: whole files by a hash of their path; ``"time"``:
  the tail of every file) give two sides that never share a second of video.
- **Index**: each file is probed once (:func:`avblocks.data.media.probe`: streams, start
  times, where the packets really end). A clip may start at ``lo + i * stride`` for
  ``lo = max(0, audio_start - video_start - audio_slack)`` and must end by
  ``min(video_end, audio_end + audio_slack)`` (times from the video origin, see
  :mod:`avblocks.data.media`), so the index only lists clips that :func:`read_clip` accepts.
  ``stride`` (seconds) defaults to the clip duration (non-overlapping clips).
- **Cache**: probe results (and probe failures) are stored in one JSON file per root,
  ``<cache_dir>/index-<hash of root>.json``, keyed by absolute path, size and mtime (ns), so
  a changed file is probed again and clip settings can change without re-probing.
  ``cache_dir`` defaults to ``$XDG_CACHE_HOME/avblocks/video_folder`` (``~/.cache/...``): the
  dataset never writes next to the data and never modifies or deletes a user file. The
  cache is written atomically (concurrent constructions, e.g. one per DDP rank, each leave
  a valid file); an unreadable cache is rebuilt; an unwritable cache folder only costs a
  warning.
- **Skipped files**: unreadable, empty, audio-less, too short or not-really-media files are
  left out at indexing, each with a warning, listed in ``dataset.skipped`` (path -> reason),
  plus one summary warning.
- **Read failures**: a read that fails is tried again ``read_retries`` times (waiting
  ``retry_delay`` seconds, doubled each time: a network file system's hiccup is not a bad
  file). A file that still fails and never read before (e.g. damaged after indexing) is
  recorded in ``dataset.failed`` (path -> reason; per process, so per DataLoader worker) with
  a warning and not read again, and the item is replaced by the *next clip in index order*
  (wrapping around) whose file still reads, so the substitute is deterministic; the item says
  so (``substitute=True``) and ``dataset.substitutions`` counts them. Only if no file reads at
  all is a black, silent clip returned (at ``size``, or the native size of the clip's file
  when ``size`` is None).
- **Failures are bounded**: a :class:`DataError` stops the reading (and so the run) when a
  file that read fine earlier in this process fails (the data changed under the run: a
  folder moved away, a disk unmounted; training on substitutes would hide it), or when more
  than ``max_bad_fraction`` of the indexed files have failed (None: no bound).
- **Items**: ``dict(video=3 t h w float in [-1, 1], audio=ch n float, label=int, path=str,
  start=float seconds, substitute=bool)``; ``path``/``start``/``label`` describe the clip
  actually returned.
- **Summary**: :meth:`VideoFolder.summary` says, in a few lines, how many files and clips, the
  classes with their clip counts, the split and every skipped file with its reason.
"""

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import fields
from fractions import Fraction
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avblocks.atomic import atomic_write_text
from avblocks.data.folder_layout import HeldOutSplit, class_of_files
from avblocks.data.media import MediaError, MediaInfo, probe, read_clip
from avblocks.timing import as_fraction

__all__ = ["DataError", "VideoFolder", "default_cache_dir"]

_CACHE_VERSION = 1


_INFO_FIELDS = {f.name for f in fields(MediaInfo)}


def _valid(entry) -> bool:
    """A cache entry this version can use (anything else is probed again)."""
    if not isinstance(entry, dict):
        return False
    if isinstance(entry.get("error"), str):
        return True
    info = entry.get("info")
    return isinstance(info, dict) and set(info) == _INFO_FIELDS


class DataError(RuntimeError):
    """Reading stopped: a file that read before fails now, or too many files failed."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/avblocks/video_folder``, or ``~/.cache/avblocks/video_folder``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "avblocks" / "video_folder"


class VideoFolder(Dataset):
    """Clips of ``num_frames`` frames at ``fps`` (+ their audio at ``sample_rate``) from ``root``.

    See the module docstring for indexing, caching, classes, splits, skipping and substitution
    rules. ``classes`` lists the class names (index = label).
    """

    def __init__(
        self,
        root: "str | os.PathLike[str]",
        *,
        num_frames: int,
        fps: "int | float | Fraction",
        size: tuple[int, int] | None,
        sample_rate: int,
        stride: float | None = None,
        channels: int = 1,
        cache_dir: "str | os.PathLike[str] | None" = None,
        extensions: Sequence[str] = ("mp4", "mkv", "webm", "mov"),
        audio_slack: float = 0.1,
        split: str = "all",
        held_out: float = 0.0,
        held_out_by: str = "file",
        read_retries: int = 2,
        retry_delay: float = 0.05,
        max_bad_fraction: float | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root ({root}) must be an existing folder")
        if num_frames < 1:
            raise ValueError(f"num_frames ({num_frames}) must be >= 1")
        self.fps = as_fraction(fps, "fps")
        if stride is not None and stride <= 0:
            raise ValueError(f"stride ({stride}) must be > 0 seconds or None")
        if sample_rate < 1 or channels < 1:
            raise ValueError(f"sample_rate ({sample_rate}) and channels ({channels}) must be >= 1")
        if read_retries < 0 or retry_delay < 0:
            raise ValueError(f"read_retries ({read_retries}) and retry_delay ({retry_delay}) must be >= 0")
        if max_bad_fraction is not None and not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction ({max_bad_fraction}) must lie in [0, 1] or be None")
        self.read_retries, self.retry_delay, self.max_bad_fraction = read_retries, retry_delay, max_bad_fraction
        self.num_frames, self.size, self.sample_rate = num_frames, size, sample_rate
        self.channels, self.audio_slack = channels, audio_slack
        self.duration = num_frames / self.fps
        self.stride = self.duration if stride is None else as_fraction(stride, "stride")
        self.extensions = tuple(e.lower().lstrip(".") for e in extensions)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:16]
        self.cache_path = self.cache_dir / f"index-{key}.json"
        self.split = HeldOutSplit(split=split, fraction=held_out, by=held_out_by)

        self.skipped: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.substitutions = 0  # items this process returned in place of an unreadable clip
        self._read_ok: set[str] = set()  # files that read fine in this process
        self.num_probed = 0  # files probed by this construction (0 when the cache served all)
        self.clips: list[tuple[str, Fraction]] = []
        self._infos: dict[str, MediaInfo] = {}
        self.labels: dict[str, int] = {}
        files = self._files()
        self.classes, class_of = class_of_files(self.root, files)
        self.num_files = len(files)
        self.other_side = 0  # files whose clips are all on the other side of the split
        labels = {str(f.resolve()): class_of[f] for f in files}
        relative = {str(f.resolve()): f.relative_to(self.root).as_posix() for f in files}
        for path, entry in self._index(files).items():
            if not self.split.keeps_file(relative[path]):
                self.other_side += 1
                continue
            self.labels[path] = labels[path]
            if "error" in entry:
                self._skip(path, entry["error"])
                continue
            info = MediaInfo.from_dict(entry["info"])
            self._infos[path] = info
            starts = self._starts(info)
            if not starts:
                lo, hi = info.usable
                side = "" if self.split.split == "all" else f" on the {self.split.split} side of the split"
                lo, hi = self.split.span(lo, max(hi, lo))
                self._skip(
                    path,
                    f"too short: {max(0.0, hi - lo):.3f} s with both video and audio{side},"
                    f" a clip needs {float(self.duration):.3f} s",
                )
            self.clips.extend((path, s) for s in starts)
        if self.skipped:
            shown = "; ".join(f"{p}: {r}" for p, r in list(self.skipped.items())[:5])
            warnings.warn(
                f"VideoFolder({self.root}): skipped {len(self.skipped)} of {len(files)} files"
                f" (see .skipped): {shown}",
                stacklevel=2,
            )

    # ---- indexing ---------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        found = [
            p
            for p in self.root.rglob("*")
            if p.suffix.lower().lstrip(".") in self.extensions and p.is_file()
        ]
        return sorted(found, key=lambda p: p.relative_to(self.root).as_posix())

    def _load_cache(self) -> dict:
        try:
            data = json.loads(self.cache_path.read_text())
            if data.get("version") == _CACHE_VERSION and isinstance(data.get("files"), dict):
                return data["files"]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as e:
            warnings.warn(
                f"VideoFolder: ignoring unreadable index cache {self.cache_path}: {e}", stacklevel=3
            )
        return {}

    def _save_cache(self, files: dict) -> None:
        data = {"version": _CACHE_VERSION, "root": str(self.root.resolve()), "files": files}
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # Compact json.dumps, not atomic_write_json's indented form: the cache holds one
            # entry per file, possibly thousands.
            atomic_write_text(self.cache_path, json.dumps(data))
        except OSError as e:
            warnings.warn(
                f"VideoFolder: cannot write index cache {self.cache_path}: {e}", stacklevel=3
            )

    def _index(self, files: list[Path]) -> dict[str, dict]:
        """``{path: {"size", "mtime_ns", "info" | "error"}}`` for ``files``, from the cache
        where size and mtime still match, probing the rest."""
        cached = self._load_cache()
        index: dict[str, dict] = {}
        for p in files:
            path = str(p.resolve())
            st = p.stat()
            entry = cached.get(path)
            if (
                _valid(entry)
                and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns
            ):
                index[path] = entry
                continue
            self.num_probed += 1
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            try:
                entry["info"] = probe(p).to_dict()
            except MediaError as e:
                entry["error"] = e.reason
            index[path] = entry
        # keep entries this listing did not visit (other extensions) while their files exist
        kept = {k: v for k, v in cached.items() if k not in index and os.path.exists(k)}
        if self.num_probed or len(kept) + len(index) != len(cached):  # new/changed/removed
            self._save_cache({**kept, **index})
        return index

    def _starts(self, info: MediaInfo) -> list[Fraction]:
        slack = self.audio_slack
        lo = max(0.0, info.audio_start - info.video_start - slack)
        hi = min(info.video_end, info.audio_end + slack) - info.video_start
        lo, hi = self.split.span(lo, max(hi, lo))
        lo_q = as_fraction(lo, "start", positive=False)
        hi_q = as_fraction(max(hi, 0.0), "end", positive=False)
        starts = []
        s = lo_q
        while s + self.duration <= hi_q:
            starts.append(s)
            s += self.stride
        return starts

    def _skip(self, path: str, reason: str) -> None:
        self.skipped[path] = reason
        warnings.warn(f"VideoFolder: skipping {path}: {reason}", stacklevel=4)

    # ---- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.clips)

    def _read(self, path: str, start: Fraction) -> dict:
        clip = read_clip(
            path,
            start=start,
            num_frames=self.num_frames,
            fps=self.fps,
            size=self.size,
            sample_rate=self.sample_rate,
            channels=self.channels,
            audio_slack=self.audio_slack,
        )
        return {"video": clip.video, "audio": clip.audio, "label": self.labels[path], "path": path,
                "start": float(start)}

    def __getitem__(self, i: int) -> dict:
        n = len(self.clips)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} clips")
        i %= n
        for j in range(n):
            path, start = self.clips[(i + j) % n]
            if path in self.failed:
                continue
            try:
                item = self._read_retrying(path, start)
            except (MediaError, OSError) as e:
                self._fail(path, getattr(e, "reason", str(e)))
                continue
            self.substitutions += j > 0
            return item | {"substitute": j > 0}
        warnings.warn(
            "VideoFolder: no file can be read; returning a black, silent clip", stacklevel=2
        )
        return self._blank(*self.clips[i])

    def _read_retrying(self, path: str, start: Fraction) -> dict:
        for attempt in range(self.read_retries + 1):
            try:
                item = self._read(path, start)
            except (MediaError, OSError):
                if attempt == self.read_retries:
                    raise
                time.sleep(self.retry_delay * 2**attempt)
            else:
                self._read_ok.add(path)
                return item
        raise AssertionError("unreachable")

    def _fail(self, path: str, reason: str) -> None:
        """Record ``path`` as unreadable, or stop (see the module docstring)."""
        tries = f"{self.read_retries + 1} attempt(s)"
        self.failed[path] = reason
        if path in self._read_ok:
            raise DataError(f"{path} read fine earlier and now fails after {tries} ({reason}): the data "
                            "changed under the run (moved, deleted, unmounted or damaged?); stopping "
                            "instead of training on substitutes")
        warnings.warn(f"VideoFolder: {path} failed at read time after {tries} ({reason}); substituting "
                      "the next readable clip", stacklevel=3)
        files = len({p for p, _ in self.clips})
        if self.max_bad_fraction is not None and len(self.failed) > self.max_bad_fraction * files:
            shown = "; ".join(f"{p}: {r}" for p, r in list(self.failed.items())[:3])
            raise DataError(f"{len(self.failed)} of the {files} files of {self.root} failed to read, more than "
                            f"max_bad_fraction ({self.max_bad_fraction}) of them; stopping (first: {shown})")

    def _blank(self, path: str, start: Fraction) -> dict:
        info = self._infos[path]
        h, w = self.size if self.size is not None else (info.height, info.width)
        n = round(self.duration * self.sample_rate)
        return {
            "video": torch.full((3, self.num_frames, h, w), -1.0),
            "audio": torch.zeros(self.channels, n),
            "label": self.labels[path],
            "path": path,
            "start": float(start),
            "substitute": True,
        }

    def summary(self, also_skipped: dict[str, str] | None = None) -> str:
        """Files, clips, classes (with clip counts), the split and every skipped file with why
        (``also_skipped``: files the caller left out before, e.g. by extension)."""
        counts = [0] * len(self.classes)
        for path, _ in self.clips:
            counts[self.labels[path]] += 1
        used = len({path for path, _ in self.clips})
        s = self.split
        side = "" if s.split == "all" else (
            f", {s.split} side of a {s.fraction:g} held-out split by {s.by}"
            + (f" ({self.other_side} file(s) on the other side)" if s.by == "file" else ""))
        lines = [f"{self.root}: {self.num_files} file(s), {len(self.clips)} clip(s) of {float(self.duration):.3f} s "
                 f"every {float(self.stride):.3f} s from {used} file(s){side}",
                 f"  {len(self.classes)} class(es): " + ", ".join(f"{i} {name} ({counts[i]} clips)"
                                                            for i, name in enumerate(self.classes))]
        skipped = dict(self.skipped) | dict(also_skipped or {})
        if skipped:
            lines.append(f"  skipped {len(skipped)} file(s), kept {len(self.clips)} clip(s):")
            lines += [f"    {path}: {reason}" for path, reason in skipped.items()]
        return "\n".join(lines)
