"""Media errors that say what happened, and requests refused before they allocate.

Before: a truncated mkv was refused as ``PermissionError: Operation not permitted`` (the
failed seek); ``size=(10000, 10000)`` allocated 5 GB before a ``MemoryError``; ``fps=1e6``
returned audio of length 0 without an error; ``VideoLikeAudio`` on a 10-hour waveform died in
the allocator; ``metrics.json`` could hold a bare ``NaN``.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from media_factory import make_media

from avblocks.atomic import atomic_write_json
from avblocks.audio import MelConfig
from avblocks.audio.video_like import VideoLikeAudio
from avblocks.data import MediaError, read_clip
from avblocks.memory import MemoryLimitError, check_fits, memory_limit


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    # the muxer writes all video packets first: a cut file keeps video but no audio, and its
    # index (at the end) is gone
    return make_media(tmp_path_factory.mktemp("m") / "whole.mkv", num_frames=1000, fps=25, size=(32, 32))


@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_a_truncated_mkv_is_reported_as_truncated(whole, tmp_path, fraction):
    cut = tmp_path / "cut.mkv"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(MediaError) as info:
        read_clip(cut, num_frames=4, fps=25, sample_rate=16000)
    reason = info.value.reason
    assert "PermissionError" not in reason  # was: "cannot read (PermissionError: Operation not permitted)"
    assert reason.startswith("damaged or truncated: FFmpeg cannot seek in it (header: 40.064 s), so it "
                             "was decoded from the start, and ")


def test_a_file_that_refuses_seeks_still_reads_what_it_holds(whole, tmp_path, monkeypatch):
    import av

    from avblocks.data import input_container

    real_open = av.open

    class Unseekable:  # what FFmpeg does with a truncated mkv: every seek fails
        def __init__(self, path):
            self.inner = real_open(path)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def seek(self, *args, **kwargs):
            raise av.error.PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(input_container.av, "open", Unseekable)
    clip = read_clip(whole, start=2.0, num_frames=4, fps=25, sample_rate=16000)
    monkeypatch.undo()
    reference = read_clip(whole, start=2.0, num_frames=4, fps=25, sample_rate=16000)
    assert torch.equal(clip.video, reference.video) and torch.equal(clip.audio, reference.audio)


def test_requests_outside_sane_bounds_are_refused_before_decoding(whole, monkeypatch):
    with pytest.raises(ValueError, match=r"fps \(1000000\) must lie in \(0, 1000\]"):
        read_clip(whole, num_frames=4, fps=1e6, sample_rate=16000)
    with pytest.raises(ValueError, match=r"1 frame\(s\) at 1000 fps hold no audio sample at 100 Hz"):
        read_clip(whole, num_frames=1, fps=1000, sample_rate=100)
    with pytest.raises(ValueError, match=r"size \(\(20000, 20\)\) must be None or \(h, w\) with sides in"):
        read_clip(whole, num_frames=4, fps=25, sample_rate=16000, size=(20000, 20))
    monkeypatch.setenv("AVBLOCKS_MEMORY_LIMIT", "4G")
    with pytest.raises(MediaError, match=r"reading 16 frames of 10000 x 10000 and 0.640 s of audio would need "
                                         r"about 26.8 GB, more than the memory limit of 4.0 GB"):
        read_clip(whole, num_frames=16, fps=25, sample_rate=16000, size=(10000, 10000))
    with pytest.raises(MediaError, match="more than the memory limit of 1.0 KB"):
        read_clip(whole, num_frames=4, fps=25, sample_rate=16000, max_bytes=1024)


def test_video_like_audio_refuses_a_ten_hour_waveform_naming_its_size():
    mel = MelConfig(sample_rate=16000, n_fft=800, hop=200, n_mels=64)
    transform = VideoLikeAudio(mel=mel, fps=8, max_bytes=2**30)
    ten_hours = torch.zeros(1, 1).expand(1, 16000 * 36000)  # a view: no memory behind it
    with pytest.raises(MemoryLimitError, match=r"video-like audio of 1 waveform\(s\) of 36000.0 s would need "
                                               r"about 16.4 GB, more than the memory limit of 1.0 GB"):
        transform(ten_hours)
    # the estimate is what the transform really makes: output and STFT of a short clip
    n = 16000 * 2
    estimate = transform.output_bytes(1, n)
    out = transform(torch.randn(1, n))
    columns, bins = n // mel.hop + 1, mel.n_fft // 2 + 1
    assert estimate >= out.numel() * 4 + columns * bins * 8  # at least the output and the complex STFT


def test_the_memory_limit_comes_from_the_environment_or_the_machine(monkeypatch):
    monkeypatch.setenv("AVBLOCKS_MEMORY_LIMIT", "512M")
    assert memory_limit() == (512 * 2**20, "AVBLOCKS_MEMORY_LIMIT=512M")
    check_fits("a small thing", 2**20)
    monkeypatch.setenv("AVBLOCKS_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="AVBLOCKS_MEMORY_LIMIT"):
        memory_limit()
    monkeypatch.delenv("AVBLOCKS_MEMORY_LIMIT")
    limit, source = memory_limit()
    assert limit > 0 and "available" in source


def test_json_reports_hold_null_with_a_reason_never_nan(tmp_path):
    path = atomic_write_json(tmp_path / "metrics.json", {"psnr": 31.5, "sync": {"score": math.nan},
                                                         "lsd": [1.0, math.inf]}, nan_as_null=True)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"psnr": 31.5, "sync": {"score": None}, "lsd": [1.0, None],
                                "nonfinite": {"sync.score": "nan", "lsd[1]": "inf"}}
    with pytest.raises(ValueError, match="NaN and infinities are refused"):
        atomic_write_json(tmp_path / "strict.json", {"x": math.nan})
