"""Bad input in, clear errors out: fuzzed media bytes, reader arguments, video-like audio shapes,
and a training run over a folder of broken files.

Documented exceptions: :func:`probe` / :func:`read_clip` raise :class:`MediaError` (a
``ValueError``) for every problem with a file and ``ValueError`` for bad arguments;
:class:`VideoLikeAudio` raises ``ValueError`` for too-short audio and jaxtyping's
``TypeCheckError`` (a ``TypeError``) for a wrong shape or dtype. Anything else is a bug.
"""

import hashlib
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from media_factory import make_media

from avblocks.audio import MelConfig, VideoLikeAudio
from avblocks.config import ConfigError
from avblocks.data.media import MediaError, probe, read_clip
from recipes.proav_dit import train_autoencoder

FPS, SR = 8, 16000


@pytest.fixture(scope="module")
def real_mp4(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("real") / "clip.mp4"
    make_media(path, fps=FPS, sample_rate=SR, num_frames=12, size=(32, 32), flash=3, beep_t=0.5)
    return path.read_bytes()


def read_or_media_error(path: Path) -> None:
    """probe + read_clip: either a well-formed clip or MediaError, nothing else."""
    try:
        info = probe(path)
    except MediaError as e:
        assert str(path) in str(e) and e.reason
        return
    assert info.video_end >= info.video_start
    try:
        clip = read_clip(path, num_frames=4, fps=FPS, sample_rate=SR, size=(16, 16))
    except MediaError as e:
        assert str(path) in str(e)
        return
    assert clip.video.shape == (3, 4, 16, 16) and clip.audio.shape == (1, 4 * SR // FPS)
    assert torch.isfinite(clip.video).all() and clip.video.abs().max() <= 1
    assert torch.isfinite(clip.audio).all()


@given(data=st.binary(max_size=2048), ext=st.sampled_from(["mp4", "mkv", "webm", "mov", "bin"]))
def test_random_bytes_give_media_errors(tmp_path_factory, data, ext):
    path = tmp_path_factory.mktemp("fuzz") / f"random.{ext}"
    path.write_bytes(data)
    read_or_media_error(path)


@given(cut=st.floats(0.0, 1.0),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
                      max_size=12))
def test_damaged_real_files_give_a_clip_or_a_media_error(tmp_path_factory, real_mp4, cut, flips):
    data = bytearray(real_mp4[: max(1, int(len(real_mp4) * cut))])
    for where, value in flips:
        data[int(where * len(data))] = value
    path = tmp_path_factory.mktemp("damaged") / "clip.mp4"
    path.write_bytes(bytes(data))
    read_or_media_error(path)


@given(num_frames=st.integers(-2, 30),
       fps=st.one_of(st.integers(-1, 60), st.floats(allow_nan=True, allow_infinity=True),
                     st.fractions(min_value=-1, max_value=60)),
       start=st.one_of(st.floats(-1, 3), st.just(math.nan)),
       sample_rate=st.integers(-1, 48000),
       channels=st.integers(0, 3),
       size=st.one_of(st.none(), st.tuples(st.integers(-1, 40), st.integers(-1, 40))))
def test_reader_arguments_give_a_clip_or_a_value_error(tmp_path_factory, real_mp4, num_frames,
                                                      fps, start, sample_rate, channels, size):
    path = tmp_path_factory.mktemp("args") / "clip.mp4"
    path.write_bytes(real_mp4)
    try:
        clip = read_clip(path, num_frames=num_frames, fps=fps, start=start,
                         sample_rate=sample_rate, channels=channels, size=size)
    except ValueError as e:  # MediaError included
        assert str(e)
        return
    fps_q = Fraction(fps).limit_denominator(10**6) if isinstance(fps, float) else Fraction(fps)
    assert clip.video.shape[:2] == (3, num_frames) and clip.audio.shape[0] == channels
    assert clip.audio.shape[1] == round(num_frames * sample_rate / fps_q)
    if size is not None:
        assert clip.video.shape[2:] == size


MEL = MelConfig(sample_rate=SR, n_fft=800, hop=200, n_mels=16)


@given(shape=st.lists(st.integers(0, 3), min_size=0, max_size=4),
       samples=st.integers(0, 9000),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int16, torch.bool]),
       scale=st.sampled_from([0.0, 1.0, 1e6]))
def test_video_like_audio_gives_frames_or_a_documented_error(shape, samples, dtype, scale):
    # half precision and empty batches have their own tests below
    assume(dtype != torch.float16 and 0 not in shape[:2])
    frames = VideoLikeAudio(mel=MEL, fps=FPS)
    waveform = (torch.randn(*shape, samples, generator=torch.Generator().manual_seed(samples))
                * scale).to(dtype)
    try:
        out = frames(waveform)
    except (ValueError, TypeError) as e:  # too short; wrong rank/dtype (jaxtyping TypeCheckError)
        assert str(e)
        return
    assert waveform.ndim in (2, 3) and waveform.is_floating_point()
    t = samples // (SR // FPS)
    c = 1 if waveform.ndim == 2 else shape[1]
    assert out.shape == (shape[0], c, t, MEL.n_mels, frames.frame_columns)
    if dtype != torch.float16:
        assert torch.isfinite(out).all()


# Found by this fuzz test (thorough profile), then fixed.
def test_video_like_audio_half_precision_is_computed_in_float32():
    waveform = torch.randn(1, 4000).half()
    half = VideoLikeAudio(mel=MEL, fps=FPS)(waveform)
    full = VideoLikeAudio(mel=MEL, fps=FPS)(waveform.float())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full)


@pytest.mark.parametrize("shape", [(0, 2000), (1, 0, 2000)])
def test_video_like_audio_empty_batch_gives_empty_frames(shape):
    out = VideoLikeAudio(mel=MEL, fps=FPS)(torch.zeros(*shape))
    assert out.shape[:2] == (shape[0], 1 if len(shape) == 2 else shape[1]) and out.numel() == 0


# ------------------------------------------------------------------------------------------
# Training over a folder of broken files
# ------------------------------------------------------------------------------------------


def digest(folder: Path) -> dict[str, tuple[str, int] | None]:
    """Every entry under ``folder``: files by content hash and mtime, folders by name."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_training_on_a_folder_of_broken_files(tmp_path, monkeypatch, capsys, real_mp4):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the index cache, not the data
    data = tmp_path / "videos"
    data.mkdir()
    common = dict(fps=FPS, sample_rate=SR, size=(32, 32))
    make_media(data / "good_a.mp4", num_frames=16, flash=2, **common)
    (data / "sub").mkdir()
    make_media(data / "sub" / "good_b.mkv", num_frames=16, flash=5, **common)
    (data / "corrupt.mp4").write_bytes(bytes(range(256)) * 8)
    (data / "truncated.mp4").write_bytes(real_mp4[: len(real_mp4) // 2])
    (data / "empty.mov").write_bytes(b"")
    make_media(data / "silent.mp4", num_frames=16, audio=False, **common)
    make_media(data / "short.webm", num_frames=3, **common)
    (data / "notes.txt").write_text("not a video")
    (data / "renamed.avi").write_bytes(real_mp4)
    before = digest(data)

    metrics = train_autoencoder.main([
        f"data.folder={data}", "data.num_frames=8", "data.size=16", "data.fps=8",
        "model.hidden_channels=16", "model.latent_channels=4", "model.depth=1", "model.heads=2",
        "model.groups=2", "optim.steps=2", "optim.warmup=1", "optim.batch_size=2", "run.eval_clips=1",
        "run.progress=false", f"run.output_dir={tmp_path / 'run'}"])

    assert digest(data) == before  # nothing modified, added or removed in the user's folder
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file() and metrics["steps"] == 2
    skipped = json.loads((tmp_path / "run" / "skipped_files.json").read_text())
    names = {Path(p).name: reason for p, reason in skipped.items()}
    assert set(names) == {"corrupt.mp4", "truncated.mp4", "empty.mov", "silent.mp4", "short.webm",
                          "notes.txt", "renamed.avi"}
    assert "empty" in names["empty.mov"] and "audio" in names["silent.mp4"]
    assert "extension" in names["notes.txt"] and "extension" in names["renamed.avi"]
    assert all(reason for reason in names.values())
    printed = capsys.readouterr().out
    assert "skipped 7 file(s), kept 4 clip(s)" in printed
    assert all(name in printed for name in names)


def test_a_folder_with_nothing_usable_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "videos"
    data.mkdir()
    (data / "empty.mp4").write_bytes(b"")
    (data / "notes.txt").write_text("not a video")
    before = digest(data)
    with pytest.raises(ConfigError, match=r"data.folder .* holds 0 usable clip\(s\)"):
        train_autoencoder.main([f"data.folder={data}", "data.num_frames=8", "data.size=16",
                                "optim.batch_size=2", "run.progress=false",
                                f"run.output_dir={tmp_path / 'run'}"])
    assert digest(data) == before
    assert set(json.loads((tmp_path / "run" / "skipped_files.json").read_text())) == {
        str((data / "empty.mp4").resolve()), str((data / "notes.txt").resolve())}
