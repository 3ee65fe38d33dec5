"""SyntheticSoundingVideo: determinism, shapes, and the world it promises (bounce <-> sound).

The rendering checks are independent of the library's detectors: the object is found by
its distance to the frame's own corner colour (the background), the sound by raw sample
values around the exact sample ``k * sample_rate / fps``, and the pitch by an FFT peak.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from avblocks.data import SyntheticSoundingVideo
from avblocks.data.synthetic import CLASSES, FLOOR_Y, OBJECT_RADIUS


def _equal_items(a, b):
    return (
        torch.equal(a["video"], b["video"])
        and torch.equal(a["audio"], b["audio"])
        and a["label"] == b["label"]
        and torch.equal(a["event_frames"], b["event_frames"])
    )


def test_shapes_dtypes_ranges():
    ds = SyntheticSoundingVideo(num_clips=7)
    assert len(ds) == 7
    item = ds[3]
    assert set(item) == {"video", "audio", "label", "event_frames"}
    assert item["video"].shape == (3, 16, 32, 32) and item["video"].dtype == torch.float32
    assert item["audio"].shape == (16 * 16000 // 8,) and item["audio"].dtype == torch.float32
    assert item["event_frames"].shape == (16,) and item["event_frames"].dtype == torch.bool
    assert isinstance(item["label"], int) and 0 <= item["label"] < 4
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert item["audio"].abs().max() <= 1
    assert torch.equal(ds.events(3), item["event_frames"].nonzero().view(-1))
    with pytest.raises(IndexError):
        ds[7]


def test_deterministic_per_seed_and_index_whatever_the_order():
    forward = [SyntheticSoundingVideo(num_clips=6, seed=5)[i] for i in range(6)]
    ds = SyntheticSoundingVideo(num_clips=6, seed=5)
    backward = {i: ds[i] for i in reversed(range(6))}
    assert all(_equal_items(forward[i], backward[i]) for i in range(6))
    # The global RNG is neither consumed nor consulted.
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    SyntheticSoundingVideo(num_clips=6, seed=5)[2]
    assert torch.equal(torch.rand(4), expected)
    torch.manual_seed(999)
    assert _equal_items(SyntheticSoundingVideo(num_clips=6, seed=5)[2], forward[2])


def test_different_seeds_and_indices_differ():
    a = SyntheticSoundingVideo(num_clips=8, seed=0)
    b = SyntheticSoundingVideo(num_clips=8, seed=1)
    for i in range(8):
        assert not torch.equal(a[i]["video"], b[i]["video"])
        assert not torch.equal(a[i]["audio"], b[i]["audio"])
    videos = [a[i]["video"] for i in range(8)]
    assert all(not torch.equal(videos[i], videos[j]) for i in range(8) for j in range(i))


def test_sound_starts_exactly_at_each_bounce_and_nowhere_else():
    ds = SyntheticSoundingVideo(num_clips=24, num_classes=8, seed=2)
    spf = ds.samples_per_frame
    for i in range(len(ds)):
        item = ds[i]
        audio = item["audio"]
        events = item["event_frames"].nonzero().view(-1).tolist()
        assert events, "every clip has at least one bounce"
        for k in events:
            s = k * spf
            before, after = audio[s - 200 : s], audio[s : s + 200]
            assert before.abs().max() < 0.02, (i, k)  # only the noise floor before
            assert audio[s].abs() >= 0.3, (i, k)  # the event's first sample is at full scale
            assert after.pow(2).mean().sqrt() > 0.1, (i, k)
        # Nothing loud happens except within 0.5 s after an event start.
        loud = (audio.abs() > 0.05).nonzero().view(-1)
        owner = [any(0 <= int(n) - k * spf < 8000 for k in events) for n in loud]
        assert all(owner), i


def _object_centre_rows(video: torch.Tensor) -> torch.Tensor:
    """Coverage-weighted centroid row (pixels) of the object above the floor, per frame."""
    size = video.shape[-1]
    floor_row = round(FLOOR_Y * size)
    above = video[:, :, :floor_row]  # c t rows w: the object never reaches the floor rows
    background = above[:, :, :1, :1]  # the corner is always background
    distance = (above - background).norm(dim=0)  # t rows w
    coverage = distance / distance.flatten(1).amax(-1).view(-1, 1, 1)
    rows = torch.arange(floor_row, dtype=torch.float32).view(1, -1, 1) + 0.5
    return (coverage * rows).flatten(1).sum(-1) / coverage.flatten(1).sum(-1)


@pytest.mark.parametrize("num_classes", [1, 3, 8])
def test_object_touches_the_floor_exactly_at_bounce_frames(num_classes):
    ds = SyntheticSoundingVideo(num_clips=12, num_classes=num_classes, seed=7)
    size = ds.size
    resting = (FLOOR_Y - OBJECT_RADIUS) * size  # centre row when the bottom is on the floor
    for i in range(len(ds)):
        item = ds[i]
        centre = _object_centre_rows(item["video"])
        bounce = item["event_frames"]
        assert torch.allclose(centre[bounce], torch.full_like(centre[bounce], resting), atol=0.05)
        assert (centre[~bounce] < resting - 1.0).all(), (i, centre, bounce)  # clearly above


def test_bounce_frames_are_visible_reversals_and_mostly_one_to_four():
    ds = SyntheticSoundingVideo(num_clips=200, seed=11)
    counts = []
    for i in range(len(ds)):
        events = ds.events(i)
        counts.append(len(events))
        assert events.min() >= 1 and events.max() <= ds.num_frames - 2
        assert (events.diff() >= 3).all()
    assert min(counts) >= 1
    assert sum(1 <= c <= 4 for c in counts) >= 0.9 * len(counts)


def test_labels_cover_all_classes_and_classes_look_and_sound_different():
    ds = SyntheticSoundingVideo(num_clips=16, num_classes=8, seed=3)
    labels = [ds[i]["label"] for i in range(16)]
    assert sorted(set(labels)) == list(range(8))
    corner = {}
    for i in range(8):
        item = ds[i]
        corner[item["label"]] = item["video"][:, 0, 0, 0]
        spec = CLASSES[item["label"]]
        if not spec.partials:
            continue
        # Dominant frequency of the first event (FFT of 0.1 s) is the class pitch.
        start = int(item["event_frames"].nonzero()[0]) * ds.samples_per_frame
        segment = item["audio"][start : start + 1600]
        spectrum = torch.fft.rfft(segment * torch.hann_window(len(segment))).abs()
        peak_hz = float(spectrum.argmax()) * ds.sample_rate / len(segment)
        assert abs(peak_hz - spec.pitch_hz) <= 10.0, (item["label"], peak_hz)
    pitches = [c.pitch_hz for c in CLASSES]
    assert len(set(pitches)) == len(pitches)
    for a in range(8):
        for b in range(a):
            assert (corner[a] - corner[b]).norm() > 0.3, (a, b)  # background colours differ


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"num_clips": 0}, "num_clips (0)"),
        ({"num_frames": 3}, "num_frames (3)"),
        ({"size": 8}, "size (8)"),
        ({"sample_rate": 16000, "fps": 7}, "sample_rate (16000)"),
        ({"fps": 0}, "fps (0)"),
        ({"num_classes": 9}, "num_classes (9)"),
        ({"num_classes": 0}, "num_classes (0)"),
        ({"seed": -1}, "seed (-1)"),
        ({"noise_std": 0.5}, "noise_std (0.5)"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        SyntheticSoundingVideo(**kwargs)


def test_default_collate_batches():
    ds = SyntheticSoundingVideo(num_clips=10)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=True)))
    assert batch["video"].shape == (4, 3, 16, 32, 32)
    assert batch["audio"].shape == (4, 32000)
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.long
    assert batch["event_frames"].shape == (4, 16) and batch["event_frames"].dtype == torch.bool


@given(
    seed=st.integers(0, 2**40),
    index=st.integers(0, 10**6),
    num_frames=st.integers(4, 24),
    size=st.sampled_from([16, 24, 48]),
    rates=st.sampled_from([(8, 16000), (4, 8000), (12, 24000), (25, 16000)]),
)
def test_any_configuration_keeps_the_timing_contract(seed, index, num_frames, size, rates):
    fps, sample_rate = rates
    ds = SyntheticSoundingVideo(
        num_clips=index + 1,
        num_frames=num_frames,
        size=size,
        fps=fps,
        sample_rate=sample_rate,
        seed=seed,
    )
    item = ds[index]
    spf = sample_rate // fps
    assert item["video"].shape == (3, num_frames, size, size)
    assert item["audio"].shape == (num_frames * spf,)
    events = item["event_frames"].nonzero().view(-1)
    assert len(events) >= 1
    assert events.min() >= 1 and events.max() <= num_frames - 2
    for k in events.tolist():
        assert item["audio"][k * spf - min(spf, 100) : k * spf].abs().max() < 0.02
        assert item["audio"][k * spf].abs() >= 0.3
    assert item["video"].abs().max() <= 1 and item["audio"].abs().max() <= 1
