"""Picture integrity on rendered synthetic frames: one object (intact), two objects, a
fragment, no object; every class through an mp4 and back (real clips score 1.0); the clip's
class is read from its colours."""

import pytest
import torch

from avblocks.data import SyntheticSoundingVideo, read_clip, write_mp4
from avblocks.data.synthetic import CLASSES
from avblocks.metrics import object_integrity
from avblocks.metrics.integrity import clip_class, frame_objects, object_mask

SIZE = 32


@pytest.fixture(scope="module")
def clips():
    data = SyntheticSoundingVideo(num_clips=16, num_classes=8, seed=3)
    return data, torch.stack([data[i]["video"] for i in range(16)]), [data[i]["label"] for i in range(16)]


def _background(video: torch.Tensor) -> torch.Tensor:
    """Each pixel's most common value over the clip (the object never stays half the clip)."""
    return video.median(dim=1, keepdim=True).values


def test_one_rendered_object_per_frame_is_intact(clips):
    _, video, labels = clips
    report = object_integrity(video, labels)
    assert (report.score, report.frames, report.class_agreement) == (1.0, 16 * 16, 1.0)
    for clip, label in zip(video[:4], labels[:4], strict=True):
        for frame in frame_objects(clip, label):
            assert len(frame) == 1 and frame[0]["whole"]


def test_two_objects_a_fragment_and_no_object(clips):
    _, video, labels = clips
    clip, label = video[0].clone(), labels[0]
    background = _background(clip)
    mask = object_mask(clip, label)
    # Frame 0: a second copy of the object, moved 12 pixels sideways (clear of the first).
    shift = 12 if mask[0].nonzero()[:, 1].float().mean() < SIZE / 2 else -12
    copy = clip[:, 0].roll(shift, dims=-1)
    moved = object_mask(clip[:, :1].roll(shift, dims=-1), label)[0]
    clip[:, 0] = torch.where(moved, copy, clip[:, 0])
    # Frame 1: the lower 60% of the object painted over with the background: a fragment.
    rows = mask[1].nonzero()[:, 0]
    cut = int(rows.min() + 0.4 * (rows.max() - rows.min() + 1))
    clip[:, 1, cut:] = torch.where(mask[1, cut:], background[:, 0, cut:], clip[:, 1, cut:])
    # Frame 2: no object at all.
    clip[:, 2] = torch.where(mask[2], background[:, 0], clip[:, 2])
    found = frame_objects(clip, label)
    assert len(found[0]) == 2 and all(o["whole"] for o in found[0])
    assert len(found[1]) == 1 and not found[1][0]["whole"]
    assert found[2] == []
    report = object_integrity(clip[None], [label])
    assert (report.intact, report.several, report.broken, report.empty) == (13, 1, 1, 1)
    assert report.score == pytest.approx(13 / 16)


def test_every_class_survives_an_mp4_round_trip(tmp_path, clips):
    data, video, labels = clips
    back = []
    for i in range(len(labels)):
        path = write_mp4(tmp_path / f"{i}.mp4", video[i], data[i]["audio"], 8, 16000)
        back.append(read_clip(path, num_frames=16, fps=8, sample_rate=16000).video)
    assert sorted(set(labels)) == list(range(8))
    report = object_integrity(torch.stack(back), labels)
    assert report.score == 1.0 and report.class_agreement == 1.0


def test_the_class_comes_from_the_colours_not_the_label(clips):
    _, video, labels = clips
    assert [clip_class(v) for v in video] == labels
    wrong = [(label + 1) % 8 for label in labels]
    report = object_integrity(video, wrong)
    assert report.score == 1.0 and report.class_agreement == 0.0  # sound pictures, wrong classes
    # A picture with no object of any class's colour is not intact under any class.
    grey = torch.zeros_like(video[:1])
    assert object_integrity(grey).empty == 16


def test_bad_input_is_refused(clips):
    _, video, labels = clips
    with pytest.raises(ValueError, match="2 labels for 16 clips"):
        object_integrity(video, labels[:2])
    with pytest.raises(ValueError, match=f"label \\(9\\) must be a synthetic class in \\[0, {len(CLASSES)}\\)"):
        object_mask(video[0], 9)
    with pytest.raises(ValueError, match="num_classes"):
        object_integrity(video, num_classes=0)
