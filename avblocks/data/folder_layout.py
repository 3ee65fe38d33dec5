"""How a folder of videos is read as a data set: classes from subfolders, and a held-out split.

- **Classes** (torchvision's ``ImageFolder`` convention): when every media file lies inside a
  subfolder of the root, each top-level subfolder that holds any (at any depth) is a class,
  named after it; classes are sorted by name and numbered from 0. A folder with media files at
  its top level is one class, named after the root, holding every file under it (a flat
  folder, or one whose subfolders only organise files).
- **Held-out split**, deterministic and never sharing a second of video between the two sides:
  ``by="file"``: a file is held out when the hash (SHA-1) of its path relative to the root,
  read as a number in ``[0, 1)``, is below ``fraction``; so the split of a file never changes
  when other files come or go, and is the same on every machine. ``by="time"``: every file
  is cut at ``lo + (1 - fraction) * (hi - lo)`` of its usable span ``[lo, hi]``: training
  clips lie wholly before the cut, held-out clips wholly after it (a sliding window that would
  straddle the cut is in neither).
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["HeldOutSplit", "SPLITS", "class_of_files"]

SPLITS = ("all", "train", "held_out")
"""The parts of a folder a dataset can be: every clip, the training part, or the held-out part."""


def class_of_files(root: Path, files: list[Path]) -> tuple[list[str], dict[Path, int]]:
    """``(class names, {file: class index})`` (see the module doc)."""
    tops = {f: f.relative_to(root).parts[0] for f in files}
    if any(len(f.relative_to(root).parts) == 1 for f in files) or not files:
        return [root.resolve().name or "root"], dict.fromkeys(files, 0)
    names = sorted(set(tops.values()))
    index = {name: i for i, name in enumerate(names)}
    return names, {f: index[t] for f, t in tops.items()}


@dataclass(frozen=True)
class HeldOutSplit:
    """Which side of the held-out split a file, or a time window of it, lies on (module doc).

    Args:
        split: ``"all"`` (no split), ``"train"`` or ``"held_out"``.
        fraction: share of files (``by="file"``) or of each file's span (``by="time"``) held out.
        by: ``"file"`` or ``"time"``.
    """

    split: Literal["all", "train", "held_out"] = "all"
    fraction: float = 0.0
    by: Literal["file", "time"] = "file"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split ({self.split!r}) must be one of {SPLITS}")
        if self.by not in ("file", "time"):
            raise ValueError(f"held_out_by ({self.by!r}) must be 'file' or 'time'")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"held_out ({self.fraction}) must be a fraction in [0, 1)")
        if self.split != "all" and self.fraction == 0.0:
            raise ValueError(f"split={self.split!r} needs held_out > 0 (the share held out)")

    def file_is_held_out(self, relative: str) -> bool:
        digest = hashlib.sha1(relative.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.fraction

    def keeps_file(self, relative: str) -> bool:
        """Whether a file has clips on this side (always, when splitting by time)."""
        if self.split == "all" or self.by == "time":
            return True
        return self.file_is_held_out(relative) == (self.split == "held_out")

    def span(self, lo: float, hi: float) -> tuple[float, float]:
        """The part of a usable span ``[lo, hi]`` (seconds) whose clips are on this side."""
        if self.split == "all" or self.by == "file":
            return lo, hi
        cut = lo + (1.0 - self.fraction) * (hi - lo)
        return (lo, cut) if self.split == "train" else (cut, hi)
