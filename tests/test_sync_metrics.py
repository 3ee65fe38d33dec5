"""Onset and bounce detectors, and the AV-sync score.

The scores are checked on hand-made lists against fractions worked out by hand; the
detectors on hand-made signals (tone bursts at chosen samples, a blob moved along a chosen
path) and on SyntheticSoundingVideo against its ground truth, clean and degraded.
"""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from hypothesis import given
from hypothesis import strategies as st

from avblocks.data import SyntheticSoundingVideo
from avblocks.metrics import (
    EventMatch,
    av_sync_score,
    batch_sync_score,
    clip_sync_score,
    detect_audio_onsets,
    detect_bounces,
    detect_onset_samples,
    match_events,
    pooled_sync_score,
)

SR, FPS = 16000, 8
SPF = SR // FPS

# -- scores on hand-made lists ------------------------------------------------------------


def test_av_sync_score_exact_fractions():
    assert av_sync_score([2, 5, 9], [2, 6], tolerance=1) == pytest.approx(2 / 3)
    assert av_sync_score([2, 5, 9], [2, 6], tolerance=0) == pytest.approx(1 / 3)
    assert av_sync_score([2, 5, 9], [2, 6], tolerance=3) == 1.0
    # The tolerance boundary is included.
    assert av_sync_score([3], [5], tolerance=2) == 1.0
    assert av_sync_score([3], [5], tolerance=1) == 0.0
    # Two onsets may match the same bounce.
    assert av_sync_score([4, 5, 6], [5], tolerance=1) == 1.0
    # Tensors and lists are interchangeable.
    assert av_sync_score(torch.tensor([1, 7]), torch.tensor([8])) == 0.5


def test_av_sync_score_edge_cases():
    assert math.isnan(av_sync_score([], [1, 2]))
    assert math.isnan(av_sync_score(torch.zeros(0, dtype=torch.long), []))
    assert av_sync_score([1, 2], []) == 0.0
    with pytest.raises(ValueError, match=r"tolerance \(-1\)"):
        av_sync_score([1], [1], tolerance=-1)


def test_pooled_sync_score_pools_onsets_over_clips():
    onsets = [[1, 2], [], [5], [9, 12]]
    bounces = [[1], [3], [], [10]]
    # matched: clip 0 -> 2 (both within 1 of frame 1), clip 2 -> 0, clip 3 -> 1 (9); of 5.
    assert pooled_sync_score(onsets, bounces, tolerance=1) == pytest.approx(3 / 5)
    assert pooled_sync_score(onsets, bounces, tolerance=0) == pytest.approx(1 / 5)
    assert math.isnan(pooled_sync_score([[], []], [[1], []]))
    with pytest.raises(ValueError, match="2 clips"):
        pooled_sync_score([[1], [2]], [[1]])


def test_match_events_is_one_to_one_closest_first():
    assert match_events([2, 3], [2], tolerance=1) == EventMatch(1, 2, 1)
    m = match_events([2, 3], [2], tolerance=1)
    assert m.precision == 0.5 and m.recall == 1.0
    # Closest pairs first: 3 takes reference 3 (distance 0), so 4 is left for 5 (distance 1).
    assert match_events([3, 4], [3, 5], tolerance=1) == EventMatch(2, 2, 2)
    assert match_events([3, 4], [3, 5], tolerance=0) == EventMatch(1, 2, 2)
    total = match_events([1], [1]) + match_events([], [4])
    assert total == EventMatch(1, 1, 2) and total.recall == 0.5
    assert math.isnan(match_events([], []).precision)


# -- audio onsets ---------------------------------------------------------------------------


def _bursts(starts: list[int], n: int = 16 * SPF, seed: int = 0, noise: float = 0.003):
    """Noise floor plus a decaying 440 Hz burst starting at each sample in ``starts``."""
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, generator=gen) * noise
    for s in starts:
        tau = torch.arange(min(n - s, 4000)) / SR
        audio[s : s + len(tau)] += 0.5 * torch.exp(-tau / 0.03) * torch.cos(2 * math.pi * 440 * tau)
    return audio


@given(
    starts=st.lists(st.integers(300, 16 * SPF - 300), min_size=0, max_size=5),
    seed=st.integers(0, 1000),
)
def test_onsets_land_in_frame_floor_of_sample_times_fps_over_sr(starts, seed):
    # Bursts at least 0.25 s apart (a 30 ms decay has faded by then), none in the last 40
    # samples (2.5 ms) of a frame: a sound with under a quarter of its hop's energy before a
    # frame edge starts after it (test_pre_echo_does_not_move_an_onset_a_frame_early).
    starts = sorted(s for s in starts if s % SPF < SPF - 40)
    kept = [s for i, s in enumerate(starts) if all(s - p >= 4000 for p in starts[:i])]
    frames = detect_audio_onsets(_bursts(kept, seed=seed), SR, FPS)
    assert frames.tolist() == sorted({s * FPS // SR for s in kept})


def test_onsets_at_frame_edges_and_in_a_batch():
    edges = [3 * SPF - 40, 6 * SPF, 9 * SPF + 1, 12 * SPF + SPF // 2]
    assert detect_audio_onsets(_bursts(edges), SR, FPS).tolist() == [2, 6, 9, 12]
    batch = torch.stack([_bursts(edges), _bursts([]), _bursts([5 * SPF])])
    frames = detect_audio_onsets(batch, SR, FPS)
    assert [f.tolist() for f in frames] == [[2, 6, 9, 12], [], [5]]
    assert detect_audio_onsets(torch.zeros(32000), SR, FPS).tolist() == []
    with pytest.raises(ValueError, match="n or b n"):
        detect_audio_onsets(torch.zeros(1, 1, 100), SR, FPS)


def test_pre_echo_does_not_move_an_onset_a_frame_early():
    """A codec's pre-echo (energy 14 dB under the sound in the 6 ms before it, as Griffin-Lim
    leaves) is not the onset: the onset stays in the sound's frame, at its first sample's hop.
    So does a sound with a single sample before the frame edge: the detector's resolution is a
    hop, and under a quarter of a hop's energy does not start the onset there."""
    gen = torch.Generator().manual_seed(0)
    audio = _bursts([6 * SPF])
    echo = 96  # 6 ms at 16 kHz
    audio[6 * SPF - echo : 6 * SPF] += 0.5 * 10 ** (-14 / 20) * torch.randn(echo, generator=gen)
    assert detect_audio_onsets(audio, SR, FPS).tolist() == [6]
    assert detect_onset_samples(audio, SR, FPS).tolist() == [6 * SPF]
    without = detect_onset_samples(audio, SR, FPS, onset_within_db=float("inf")).tolist()
    assert without == [6 * SPF - 125]  # the old rule: one hop, and one frame, early
    assert detect_audio_onsets(_bursts([3 * SPF - 1]), SR, FPS).tolist() == [3]


# -- visual bounces -------------------------------------------------------------------------


def _blob_video(rows: list[float], cols: list[float], size: int = 32, invert: bool = False):
    """A Gaussian blob (sigma 2 px) on a textured background, centred at (rows[t], cols[t])."""
    gen = torch.Generator().manual_seed(1)
    texture = torch.rand(3, 1, size, size, generator=gen) * 0.3 - 0.2
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    r = torch.tensor(rows).view(-1, 1, 1)
    c = torch.tensor(cols).view(-1, 1, 1)
    blob = torch.exp(-((grid.view(1, -1, 1) - r) ** 2 + (grid.view(1, 1, -1) - c) ** 2) / 8)
    colour = torch.tensor([-0.9, -0.9, -0.9] if invert else [0.6, 0.9, 0.2]).view(3, 1, 1, 1)
    base = torch.ones(3, 1, size, size) * 0.7 if invert else texture
    return base + blob * (colour - base)


@pytest.mark.parametrize("invert", [False, True])
def test_bounces_are_floor_contacts_of_a_hand_made_path(invert):
    # Lowest points (largest row) at frames 3, 8 and 12; a plateau-free, noisy-free path.
    rows = [14, 20, 24, 26, 23, 17, 14, 20, 26, 22, 19, 23, 26, 21, 17, 15]
    cols = [6 + 1.2 * t for t in range(16)]
    video = _blob_video(rows, cols, invert=invert)
    assert detect_bounces(video).tolist() == [3, 8, 12]
    # A mid-air wobble (a local max far above the floor) is not a bounce.
    rows_wobble = [14, 20, 24, 26, 23, 17, 12, 13, 10, 8, 12, 18, 26, 21, 17, 15]
    assert detect_bounces(_blob_video(rows_wobble, cols, invert=invert)).tolist() == [3, 12]


def test_bounce_on_a_plateau_reports_its_first_frame_and_edges_never_bounce():
    rows = [26, 20, 18, 22, 26, 26, 21, 18, 17, 19, 22, 25, 20, 18, 20, 26]
    cols = [6 + 1.2 * t for t in range(16)]
    assert detect_bounces(_blob_video(rows, cols)).tolist() == [4, 11]


def test_static_video_has_no_bounces():
    assert detect_bounces(torch.zeros(3, 16, 32, 32)).tolist() == []
    assert [b.tolist() for b in detect_bounces(torch.zeros(2, 3, 16, 32, 32))] == [[], []]


# -- on the synthetic dataset -------------------------------------------------------------


@pytest.fixture(scope="module")
def clips():
    ds = SyntheticSoundingVideo(num_clips=50, num_classes=8, seed=123)
    items = [ds[i] for i in range(len(ds))]
    video = torch.stack([x["video"] for x in items])
    audio = torch.stack([x["audio"] for x in items])
    truth = [x["event_frames"].nonzero().view(-1) for x in items]
    return video, audio, truth


def _pooled(detected, truth, tolerance):
    return sum(
        (match_events(d, t, tolerance) for d, t in zip(detected, truth, strict=True)),
        EventMatch(0, 0, 0),
    )


def test_detectors_recover_ground_truth_on_synthetic_clips(clips):
    video, audio, truth = clips
    onsets = _pooled(detect_audio_onsets(audio, SR, FPS), truth, tolerance=0)
    bounces = _pooled(detect_bounces(video), truth, tolerance=1)
    # Measured: precision and recall exactly 1.0 for both (50 clips, 140 events).
    assert onsets.precision >= 0.95 and onsets.recall >= 0.95, onsets
    assert bounces.precision >= 0.9 and bounces.recall >= 0.9, bounces


def test_detectors_survive_blur_and_noise(clips):
    video, audio, truth = clips
    gen = torch.Generator().manual_seed(0)
    b, c, t, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)
    blurred = TF.gaussian_blur(frames, kernel_size=7, sigma=1.5).reshape(b, t, c, h, w)
    blurred = blurred.transpose(1, 2) + 0.1 * torch.randn(video.shape, generator=gen)
    noisy = audio + 0.03 * torch.randn(audio.shape, generator=gen)
    onsets = _pooled(detect_audio_onsets(noisy, SR, FPS), truth, tolerance=0)
    bounces = _pooled(detect_bounces(blurred), truth, tolerance=1)
    # Measured: still 1.0 / 1.0 for both.
    assert onsets.precision >= 0.9 and onsets.recall >= 0.9, onsets
    assert bounces.precision >= 0.9 and bounces.recall >= 0.9, bounces


def test_sync_score_is_high_on_real_pairs_and_lower_on_shuffled(clips):
    video, audio, _ = clips
    real = batch_sync_score(video, audio, SR, FPS)
    shuffled = batch_sync_score(video.roll(-1, dims=0), audio, SR, FPS)  # video i+1, audio i
    # Measured: real 1.0 both ways, shuffled 0.55 both ways.
    assert real.score >= 0.9 and real.reverse_score >= 0.9
    assert shuffled.score <= real.score - 0.25
    assert shuffled.reverse_score <= real.reverse_score - 0.25
    assert real.reverse_score == pooled_sync_score(real.bounce_frames, real.onset_frames)
    assert len(real.onset_frames) == len(real.bounce_frames) == len(video)
    expected = pooled_sync_score(real.onset_frames, real.bounce_frames, tolerance=1)
    assert real.score == expected
    one = clip_sync_score(video[0], audio[0], SR, FPS)
    assert one.onset_frames[0].tolist() == real.onset_frames[0].tolist()
    assert one.score == av_sync_score(one.onset_frames[0], one.bounce_frames[0])
