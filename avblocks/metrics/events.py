"""Event F1: audio onsets and visual bounces matched one to one, and how far apart they are.

The synthetic set's every bounce makes one sound that starts on the bounce frame
(:mod:`avblocks.data.synthetic`), so a synchronised clip has exactly one onset per bounce,
in the same frame. The score of :func:`avblocks.metrics.av_sync_score` (onsets with a bounce
within one frame, several onsets may share a bounce) sees neither missing sounds nor extra
ones that land near a bounce; event F1 sees both:

- **matching**: onset frames and bounce frames are paired one to one, each pair at most
  ``tolerance`` frames apart; of all such pairings the one with the most pairs, and among
  those the smallest total distance (:func:`match_one_to_one`, exact: a dynamic programme
  over the sorted frames, since an optimal 1-D matching never crosses);
- **precision** = pairs / onsets (sounds that have their bounce), **recall** = pairs /
  bounces (bounces that are heard), **F1** = ``2 pairs / (onsets + bounces)``. Pooled over
  clips by adding the counts (:class:`EventCounts` add), so a clip with no events adds
  nothing; over no events at all the scores are NaN (undefined), never 0 or 1 by fiat.
  Reported at ``tolerance`` 0 (the exact frame) and 1 (+-1 frame);
- **timing error**: for each pair at +-1 frame, the onset's time (sub-frame: the sample
  :func:`avblocks.metrics.detect_onset_samples` gives) minus the start of the bounce frame
  ``k / fps``, in milliseconds (:func:`onset_timing_errors`). A sound that starts on its
  bounce has error 0 up to the detector's hop (8 ms); Griffin-Lim's pre-echo shows as a few
  ms early;
- **onset-count ratio**: generated onsets / real onsets over the same number of clips
  (above 1: ghost sounds; below: missing ones); :func:`onset_count_ratio`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from avblocks.timing import as_fraction

__all__ = [
    "EventCounts",
    "event_counts",
    "pooled_event_counts",
    "match_one_to_one",
    "onset_timing_errors",
    "onset_count_ratio",
]

Frames = Tensor | Sequence[int]


def _ints(frames: Frames) -> list[int]:
    if isinstance(frames, Tensor):
        return [int(f) for f in frames.reshape(-1).tolist()]
    return [int(f) for f in frames]


def _check_tolerance(tolerance: int) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance ({tolerance!r}) must be a whole number of frames >= 0")


def match_one_to_one(onsets: Frames, bounces: Frames, tolerance: int) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of onset ``i`` and bounce ``j`` (indices into the sorted inputs),
    ``|onset - bounce| <= tolerance``: the most pairs, and of those the least total distance.

    ``onsets`` and ``bounces`` are frame indices (any order; duplicates are separate events).
    """
    _check_tolerance(tolerance)
    a, b = sorted(_ints(onsets)), sorted(_ints(bounces))
    # best[i][j] = (pairs, -distance) over a[:i], b[:j]; optimal 1-D matchings never cross.
    best = [[(0, 0)] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            options = [best[i - 1][j], best[i][j - 1]]
            gap = abs(a[i - 1] - b[j - 1])
            if gap <= tolerance:
                pairs, neg = best[i - 1][j - 1]
                options.append((pairs + 1, neg - gap))
            best[i][j] = max(options)
    pairs: list[tuple[int, int]] = []
    i, j = len(a), len(b)
    while i and j:  # walk back through the choices
        gap = abs(a[i - 1] - b[j - 1])
        pairs_here, neg = best[i - 1][j - 1]
        if gap <= tolerance and best[i][j] == (pairs_here + 1, neg - gap):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif best[i][j] == best[i - 1][j]:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


@dataclass(frozen=True)
class EventCounts:
    """Matched pairs, onsets and bounces; add to pool over clips."""

    matched: int
    onsets: int
    bounces: int

    @property
    def precision(self) -> float:
        """Onsets with their bounce (NaN without onsets)."""
        return self.matched / self.onsets if self.onsets else float("nan")

    @property
    def recall(self) -> float:
        """Bounces with their onset (NaN without bounces)."""
        return self.matched / self.bounces if self.bounces else float("nan")

    @property
    def f1(self) -> float:
        """``2 matched / (onsets + bounces)`` (NaN without events)."""
        total = self.onsets + self.bounces
        return 2 * self.matched / total if total else float("nan")

    def __add__(self, other: "EventCounts") -> "EventCounts":
        return EventCounts(self.matched + other.matched, self.onsets + other.onsets,
                           self.bounces + other.bounces)

    def as_dict(self) -> dict[str, float | int]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                "matched": self.matched, "onsets": self.onsets, "bounces": self.bounces}


def event_counts(onsets: Frames, bounces: Frames, tolerance: int = 0) -> EventCounts:
    """One clip's :class:`EventCounts` at ``tolerance`` frames (0: the exact frame)."""
    a, b = _ints(onsets), _ints(bounces)
    return EventCounts(len(match_one_to_one(a, b, tolerance)), len(a), len(b))


def pooled_event_counts(onsets: Sequence[Frames], bounces: Sequence[Frames], tolerance: int = 0) -> EventCounts:
    """:func:`event_counts` of every clip, added."""
    if len(onsets) != len(bounces):
        raise ValueError(f"got onsets for {len(onsets)} clips but bounces for {len(bounces)}")
    total = EventCounts(0, 0, 0)
    for a, b in zip(onsets, bounces, strict=True):
        total = total + event_counts(a, b, tolerance)
    return total


def onset_timing_errors(onset_samples: Frames, bounces: Frames, sample_rate: int,
                        fps: "int | float | Fraction", tolerance: int = 1) -> Tensor:
    """Onset time minus bounce-frame start (``k / fps``) in milliseconds, one value per pair
    of :func:`match_one_to_one` on the onsets' frames at ``tolerance`` (float64, sorted by
    onset). Positive: the sound comes late."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate ({sample_rate}) must be positive")
    fps_q = as_fraction(fps, "fps")
    samples = sorted(_ints(onset_samples))
    frames = [(s * fps_q.numerator) // (sample_rate * fps_q.denominator) for s in samples]
    b = sorted(_ints(bounces))
    pairs = match_one_to_one(frames, b, tolerance)
    errors = [1000 * (Fraction(samples[i], sample_rate) - Fraction(b[j]) / fps_q) for i, j in pairs]
    return torch.tensor([float(e) for e in errors], dtype=torch.float64)


def onset_count_ratio(generated_onsets: int, real_onsets: int) -> float:
    """Generated onsets over real onsets (same number of clips); NaN when real has none."""
    if generated_onsets < 0 or real_onsets < 0:
        raise ValueError(f"onset counts ({generated_onsets}, {real_onsets}) must be >= 0")
    return generated_onsets / real_onsets if real_onsets else float("nan")
