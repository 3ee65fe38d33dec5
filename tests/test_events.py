"""Event F1, onset timing and count ratio: hand-built cases worked out by hand (an onset
exactly on a bounce, one frame off, a missing one, an extra one), the matching checked
against brute force over every one-to-one pairing, and the timing against sample arithmetic."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.data import SyntheticSoundingVideo
from avblocks.metrics import (
    EventCounts,
    detect_bounces,
    detect_onset_samples,
    event_counts,
    match_one_to_one,
    onset_count_ratio,
    onset_timing_errors,
    pooled_event_counts,
)

SR, FPS = 16000, 8
SPF = SR // FPS


def test_an_onset_exactly_on_its_bounce():
    c = event_counts([5], [5], tolerance=0)
    assert (c.matched, c.precision, c.recall, c.f1) == (1, 1.0, 1.0, 1.0)


def test_one_frame_off_counts_at_one_frame_only():
    assert event_counts([6], [5], tolerance=0).f1 == 0.0
    assert event_counts([4], [5], tolerance=1).f1 == 1.0
    assert event_counts([7], [5], tolerance=1).f1 == 0.0


def test_a_missing_onset_lowers_recall_an_extra_one_precision():
    missing = event_counts([3], [3, 9], tolerance=0)  # the bounce at 9 is silent
    assert (missing.precision, missing.recall, missing.f1) == (1.0, 0.5, pytest.approx(2 / 3))
    extra = event_counts([3, 6, 9], [3, 9], tolerance=0)  # a ghost click at 6
    assert (extra.precision, extra.recall, extra.f1) == (pytest.approx(2 / 3), 1.0, pytest.approx(0.8))
    # The old score counts two onsets next to one bounce as both matched; F1 pairs one to one.
    doubled = event_counts([4, 5], [5], tolerance=1)
    assert (doubled.matched, doubled.precision, doubled.recall) == (1, 0.5, 1.0)


def test_pooling_adds_counts_and_nothing_is_nan_only_without_events():
    pooled = pooled_event_counts([[3], [], [2, 8]], [[3], [4], [8]], tolerance=0)
    assert pooled == EventCounts(matched=2, onsets=3, bounces=3)
    assert pooled.f1 == pytest.approx(4 / 6)
    empty = event_counts([], [], tolerance=1)
    assert math.isnan(empty.f1) and math.isnan(empty.precision) and math.isnan(empty.recall)
    assert event_counts([], [4]).recall == 0.0 and math.isnan(event_counts([], [4]).precision)
    with pytest.raises(ValueError, match="3 clips but bounces for 2"):
        pooled_event_counts([[1], [2], [3]], [[1], [2]])
    with pytest.raises(ValueError, match=r"tolerance \(-1\)"):
        event_counts([1], [1], tolerance=-1)


def test_matching_finds_the_most_pairs_where_closest_first_does_not():
    # Closest-first pairs 2-2 and leaves 1 and 3 apart; the best pairing is 1-2, 2-3.
    assert match_one_to_one([1, 2], [2, 3], tolerance=1) == [(0, 0), (1, 1)]
    # Of equally many pairs, the closest: the onset at 5 takes the bounce at 5, not 4.
    assert match_one_to_one([5], [4, 5], tolerance=1) == [(0, 1)]


def _brute_force(a: list[int], b: list[int], tolerance: int) -> tuple[int, int]:
    """(most pairs, least total distance) over every one-to-one pairing."""
    best = (0, 0)
    for k in range(min(len(a), len(b)), 0, -1):
        for chosen in itertools.combinations(range(len(a)), k):
            for targets in itertools.permutations(range(len(b)), k):
                gaps = [abs(a[i] - b[j]) for i, j in zip(chosen, targets, strict=True)]
                if max(gaps) <= tolerance:
                    best = max(best, (k, -sum(gaps)))
        if best[0]:
            return best[0], -best[1]
    return 0, 0


@given(a=st.lists(st.integers(0, 12), max_size=5), b=st.lists(st.integers(0, 12), max_size=5),
       tolerance=st.integers(0, 2))
def test_matching_equals_brute_force(a, b, tolerance):
    pairs = match_one_to_one(a, b, tolerance)
    sa, sb = sorted(a), sorted(b)
    assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
    assert all(abs(sa[i] - sb[j]) <= tolerance for i, j in pairs)
    assert (len(pairs), sum(abs(sa[i] - sb[j]) for i, j in pairs)) == _brute_force(a, b, tolerance)


def test_timing_error_in_milliseconds_against_the_bounce_frame():
    # Onsets 8 ms late for bounce 2, on time for bounce 6, 120 ms late for bounce 9 (still
    # frame 9: frames are 125 ms), and one at frame 13 with no bounce near it.
    samples = [2 * SPF + 128, 6 * SPF, 9 * SPF + 1920, 13 * SPF]
    errors = onset_timing_errors(samples, [2, 6, 9], SR, FPS)
    torch.testing.assert_close(errors, torch.tensor([8.0, 0.0, 120.0], dtype=torch.float64))
    # One frame early still pairs at +-1 frame: 125 ms minus the sub-frame part.
    early = onset_timing_errors([4 * SPF + 400], [5], SR, FPS)
    assert early.tolist() == [pytest.approx(-100.0)]
    assert onset_timing_errors([4 * SPF], [5], SR, FPS, tolerance=0).numel() == 0


def test_onset_count_ratio():
    assert onset_count_ratio(74, 46) == pytest.approx(74 / 46)
    assert math.isnan(onset_count_ratio(3, 0))
    with pytest.raises(ValueError, match="must be >= 0"):
        onset_count_ratio(-1, 3)


def test_real_synthetic_clips_score_one_at_the_exact_frame_and_zero_error():
    clips = SyntheticSoundingVideo(num_clips=12, seed=5)
    video = torch.stack([clips[i]["video"] for i in range(12)])
    audio = torch.stack([clips[i]["audio"] for i in range(12)])
    samples = detect_onset_samples(audio, SR, FPS)
    onsets = [torch.tensor(sorted({int(s) // SPF for s in clip})) for clip in samples]
    truth = [clips.events(i) for i in range(12)]
    assert pooled_event_counts(onsets, detect_bounces(video), 0).f1 == 1.0
    assert pooled_event_counts(onsets, truth, 0).f1 == 1.0
    errors = torch.cat([onset_timing_errors(s, t, SR, FPS) for s, t in zip(samples, truth, strict=True)])
    assert len(errors) == sum(len(t) for t in truth) and errors.abs().max() == 0.0
