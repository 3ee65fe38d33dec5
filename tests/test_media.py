"""Real media I/O: read_clip (timestamp alignment, resampling, resizing, errors), write_mp4,
save_preview. Every file is made here with PyAV (tests/media_factory.py)."""

import math
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from hypothesis import given
from hypothesis import strategies as st
from media_factory import decode_index, frame_energy, index_colors, make_media

from avblocks.data import MediaError, media, probe, read_clip, save_preview, write_mp4

FPS = [Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30)]
RATES = [16000, 22050, 44100, 48000]


def _flash_beep_check(clip, k, fps, sr, num_frames):
    assert clip.video.shape == (3, num_frames, 32, 32)
    assert clip.audio.shape == (1, round(num_frames * sr / fps))
    brightness = clip.video.mean(dim=(0, 2, 3)).numpy()
    energy = frame_energy(clip.audio.numpy(), fps, sr)
    assert brightness.argmax() == k, brightness
    assert energy.argmax() == k, energy
    # the beep is confined to its frame: neighbours hold < 5% of its energy (codec pre-echo)
    assert energy[k - 1] < 0.05 * energy[k] and energy[k + 1] < 0.05 * energy[k]


# ---- alignment: flash + beep ------------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("fps", FPS, ids=str)
def test_flash_and_beep_land_in_the_same_frame(tmp_path, fps, sr):
    k, n = 7, 14
    path = make_media(
        tmp_path / "a.mp4", fps=fps, sample_rate=sr, num_frames=n, flash=k, beep_t=k / fps
    )
    clip = read_clip(path, num_frames=n, fps=fps, sample_rate=sr)
    assert clip.fps == fps and clip.sample_rate == sr
    _flash_beep_check(clip, k, fps, sr, n)


@pytest.mark.parametrize("ext", ["mkv", "webm", "mov"])
@pytest.mark.parametrize("fps", [Fraction(24), Fraction(30000, 1001)], ids=str)
def test_flash_and_beep_aligned_in_other_containers(tmp_path, ext, fps):
    # mkv/webm store 1 ms timestamps (1/24 s -> 42 ms): alignment must survive the rounding
    k, n, sr = 6, 12, 48000
    path = make_media(
        tmp_path / f"a.{ext}", fps=fps, sample_rate=sr, num_frames=n, flash=k, beep_t=k / fps
    )
    _flash_beep_check(read_clip(path, num_frames=n, fps=fps, sample_rate=sr), k, fps, sr, n)


@pytest.mark.parametrize("read_sr", [16000, 44100])
def test_resampled_audio_keeps_the_beep_in_its_frame(tmp_path, read_sr):
    k, n, fps = 5, 12, Fraction(25)
    path = make_media(
        tmp_path / "a.mp4", fps=fps, sample_rate=48000, num_frames=n, flash=k, beep_t=k / fps
    )
    _flash_beep_check(
        read_clip(path, num_frames=n, fps=fps, sample_rate=read_sr), k, fps, read_sr, n
    )


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize(
    "video_start, audio_start",
    [
        (Fraction(1, 5), Fraction(1, 4)),
        (Fraction(1, 5), Fraction(0)),
        (Fraction(0), Fraction(3, 25)),
    ],
    ids=["both-late", "audio-early", "audio-late"],
)
def test_stream_start_offsets_align_by_timestamps(tmp_path, ext, video_start, audio_start):
    """Flash and beep happen at the same absolute instant; the streams start at different
    times. Counting frames/samples from each stream's start would misalign them."""
    fps, sr, n = Fraction(25), 16000, 20
    flash = 11  # video frame index within the stream
    t_event = video_start + flash / fps  # absolute time
    path = make_media(
        tmp_path / f"off.{ext}",
        fps=fps,
        sample_rate=sr,
        num_frames=n,
        flash=flash,
        beep_t=t_event,
        video_start=video_start,
        audio_start=audio_start,
        audio_seconds=video_start + n / fps - audio_start,
    )
    info = probe(path)
    assert info.video_start == pytest.approx(float(video_start), abs=1e-3)
    start_frames = 4  # clip start, measured from the video origin: 4 frames = 0.16 s
    clip = read_clip(
        path, start=Fraction(start_frames) / fps, num_frames=12, fps=fps, sample_rate=sr
    )
    _flash_beep_check(clip, flash - start_frames, fps, sr, 12)


def test_audio_starting_late_is_zero_padded_within_slack_else_refused(tmp_path):
    fps, sr = Fraction(25), 16000
    path = make_media(
        tmp_path / "late.mp4",
        fps=fps,
        sample_rate=sr,
        num_frames=12,
        audio_start=Fraction(1, 5),
        audio_seconds=Fraction(12, 25) - Fraction(1, 5),
        tone=True,
    )
    info = probe(path)
    head = info.audio_start - info.video_start  # first decodable sample (AAC priming included)
    assert 0.1 < head <= 0.2
    with pytest.raises(MediaError, match="audio does not cover"):
        read_clip(path, num_frames=10, fps=fps, sample_rate=sr)  # default slack 0.1 s
    clip = read_clip(path, num_frames=10, fps=fps, sample_rate=sr, audio_slack=0.25)
    assert clip.audio.shape == (1, 6400)
    pad = round(head * sr)
    assert clip.audio[0, :pad].abs().max() == 0  # silence where the stream has nothing
    late = clip.audio[0, round(0.2 * sr) + 200 :]  # the tone, after the AAC warm-up
    assert late.abs().max() > 0.3


# ---- frame-rate conversion by timestamps ------------------------------------------------------


@pytest.fixture(scope="module")
def indexed_24fps(tmp_path_factory):
    """2 s at 24 fps, each frame stamped with its index; keyframe every 12 frames."""
    path = tmp_path_factory.mktemp("idx") / "idx24.mp4"
    return make_media(
        path, fps=24, sample_rate=16000, num_frames=48, colors=index_colors(48), gop=12
    )


@given(
    fps=st.sampled_from(
        [Fraction(10), Fraction(15), Fraction(25), Fraction(30000, 1001), Fraction(60)]
    ),
    start_tick=st.integers(0, 60),
    num_frames=st.integers(1, 16),
)
def test_frames_are_chosen_by_presentation_time(indexed_24fps, fps, start_tick, num_frames):
    start = Fraction(start_tick, 100)
    if start + num_frames / fps > 2:
        return
    clip = read_clip(indexed_24fps, start=start, num_frames=num_frames, fps=fps, sample_rate=16000)
    # the source frame displayed at the middle of each clip frame's interval
    expected = [math.floor((start + Fraction(2 * k + 1, 2) / fps) * 24) for k in range(num_frames)]
    assert decode_index(clip.video).tolist() == expected


@pytest.mark.parametrize("fps", [Fraction(24), Fraction(30000, 1001)], ids=str)
def test_b_frames_from_write_mp4_are_placed_by_presentation_time(tmp_path, fps):
    """write_mp4's default preset uses B-frames (decode order != display order, negative
    dts, an mp4 edit list): frames must still come back in display order, by time."""
    n = 48
    colors = torch.tensor(index_colors(n), dtype=torch.uint8)  # n 3
    video = colors.T[:, :, None, None].expand(3, n, 32, 32).contiguous()
    path = write_mp4(tmp_path / "b.mp4", video, torch.zeros(round(n * 16000 / fps)), fps, 16000)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.has_b_frames
    for start, read_fps in [
        (Fraction(0), fps),
        (Fraction(1, 2), Fraction(15)),
        (Fraction(1), Fraction(30)),
    ]:
        clip = read_clip(path, start=start, num_frames=8, fps=read_fps, sample_rate=16000)
        expected = [math.floor((start + Fraction(2 * k + 1, 2) / read_fps) * fps) for k in range(8)]
        assert decode_index(clip.video).tolist() == expected


def test_seeking_late_in_a_file_reads_the_right_frames(indexed_24fps):
    clip = read_clip(indexed_24fps, start=1.5, num_frames=8, fps=24, sample_rate=16000)
    assert decode_index(clip.video).tolist() == list(range(36, 44))


def test_reading_past_the_end_is_a_clear_error(indexed_24fps):
    with pytest.raises(MediaError, match="too short") as e:
        read_clip(indexed_24fps, start=1.8, num_frames=8, fps=24, sample_rate=16000)
    assert str(indexed_24fps) in str(e.value)


# ---- resizing, channels -----------------------------------------------------------------------


def test_resize_covers_then_centre_crops(tmp_path):
    # 32 x 64 frame of four vertical bands; (16, 16) scales to 16 x 32 and keeps bands 1 and 2
    bands = np.array([[250, 0, 0], [0, 250, 0], [0, 0, 250], [250, 250, 0]], np.uint8)
    img = np.repeat(bands, 16, axis=0)[None].repeat(32, axis=0)  # h=32, w=64
    path = make_media(tmp_path / "bands.mp4", num_frames=4, size=(32, 64), images=[img] * 4)
    clip = read_clip(path, num_frames=4, fps=25, sample_rate=16000, size=(16, 16))
    assert clip.video.shape == (3, 4, 16, 16)
    rgb = (clip.video[:, 0] + 1) * 127.5  # 3 h w
    left, right = rgb[:, :, 1:7].mean(dim=(1, 2)), rgb[:, :, 9:15].mean(dim=(1, 2))
    assert left[1] > 200 and left[0] < 50 and left[2] < 50  # green band
    assert right[2] > 200 and right[0] < 50 and right[1] < 50  # blue band
    native = read_clip(path, num_frames=1, fps=25, sample_rate=16000)
    assert native.video.shape == (3, 1, 32, 64)


def test_channels_mono_mix_and_stereo(tmp_path):
    path = make_media(
        tmp_path / "st.mp4", num_frames=10, flash=4, beep_t=Fraction(4, 25), channels=2
    )
    stereo = read_clip(path, num_frames=10, fps=25, sample_rate=16000, channels=2)
    mono = read_clip(path, num_frames=10, fps=25, sample_rate=16000)
    assert stereo.audio.shape == (2, 6400) and mono.audio.shape == (1, 6400)
    torch.testing.assert_close(mono.audio[0], stereo.audio.mean(0), atol=1e-5, rtol=0)
    up = read_clip(
        make_media(tmp_path / "m.mp4", num_frames=10, flash=4, beep_t=Fraction(4, 25)),
        num_frames=10,
        fps=25,
        sample_rate=16000,
        channels=2,
    )
    torch.testing.assert_close(up.audio[0], up.audio[1])


def test_resampling_matches_torchaudio_on_the_decoded_source(tmp_path):
    """Independent reference: decode the whole 48 kHz track with PyAV, resample it with
    torchaudio, cut the clip's window; read_clip must agree away from the buffer edges."""
    fps, n = Fraction(25), 12
    path = make_media(
        tmp_path / "r.mp4",
        fps=fps,
        sample_rate=48000,
        num_frames=25,
        flash=8,
        beep_t=Fraction(8, 25),
    )
    with av.open(str(path)) as c:
        full = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    ref = AF.resample(torch.from_numpy(full), 48000, 16000)
    start = Fraction(4, 25)
    got = read_clip(path, start=start, num_frames=n, fps=fps, sample_rate=16000).audio
    j0 = round(start * 16000)
    torch.testing.assert_close(got, ref[:, j0 : j0 + got.shape[1]], atol=2e-3, rtol=0)


# ---- errors -----------------------------------------------------------------------------------


def test_errors_name_the_path_and_the_reason(tmp_path):
    silent = make_media(tmp_path / "silent.mp4", audio=False)
    with pytest.raises(MediaError, match="no audio stream"):
        read_clip(silent, num_frames=4, fps=25, sample_rate=16000)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        read_clip(empty, num_frames=4, fps=25, sample_rate=16000)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(5000))
    with pytest.raises(MediaError, match="cannot read") as e:
        read_clip(junk, num_frames=4, fps=25, sample_rate=16000)
    assert e.value.path == str(junk) and isinstance(e.value, ValueError)
    good = make_media(tmp_path / "good.mp4", num_frames=12)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MediaError):
        read_clip(cut, num_frames=4, fps=25, sample_rate=16000)
    with pytest.raises(MediaError, match="too short"):
        read_clip(good, num_frames=13, fps=25, sample_rate=16000)
    with pytest.raises(MediaError, match="no such file"):
        read_clip(tmp_path / "nope.mp4", num_frames=4, fps=25, sample_rate=16000)
    with pytest.raises(ValueError, match="num_frames"):
        read_clip(good, num_frames=0, fps=25, sample_rate=16000)


def test_probe_reports_streams_and_true_ends(tmp_path):
    path = make_media(
        tmp_path / "p.mp4", fps=Fraction(30000, 1001), sample_rate=22050, num_frames=12
    )
    info = probe(path)
    assert (info.width, info.height) == (32, 32)
    assert info.fps == pytest.approx(30000 / 1001)
    assert info.video_end - info.video_start == pytest.approx(12 * 1001 / 30000, abs=1e-6)
    assert (info.video_codec, info.audio_codec, info.sample_rate) == ("h264", "aac", 22050)
    # AAC ends on a whole 1024-sample frame: never short, at most one frame (+1 ms) long
    extra = info.audio_end - 12 * 1001 / 30000
    assert -1e-3 <= extra <= 1024 / 22050 + 1e-3


def test_reading_late_in_a_file_seeks_instead_of_decoding_from_the_start(tmp_path, monkeypatch):
    """Deterministic stand-in for speed: count the video frames decoded (a timed assertion
    would fail on a busy machine)."""
    path = make_media(tmp_path / "long.mp4", num_frames=200, size=(32, 32), gop=10)
    decoded = []
    frame_time = media._frame_time

    def counting(frame):
        if isinstance(frame, av.VideoFrame):
            decoded.append(frame.pts)
        return frame_time(frame)

    monkeypatch.setattr(media, "_frame_time", counting)
    clip = read_clip(path, start=Fraction(175, 25), num_frames=4, fps=25, sample_rate=16000)
    assert clip.video.shape[1] == 4
    assert 4 <= len(decoded) <= 30, decoded  # from the keyframe before frame 175, not from 0


# ---- write_mp4 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("fps", FPS, ids=str)
def test_write_mp4_round_trip_keeps_timing(tmp_path, fps, sr):
    n, k = 12, 5
    video = torch.full((3, n, 32, 32), -1.0)
    video[:, k] = 1.0
    spf = sr / fps
    audio = torch.zeros(round(n * spf))
    s0, s1 = round(k * spf), round((k + 1) * spf)
    audio[s0:s1] = 0.8 * torch.sin(2 * math.pi * 1000 * torch.arange(s1 - s0) / sr)
    path = write_mp4(tmp_path / "out.mp4", video, audio, fps, sr, preset="ultrafast")
    with av.open(str(path)) as c:
        vs, a_s = c.streams.video[0], c.streams.audio[0]
        assert c.format.name.startswith("mov,mp4")
        assert (vs.codec_context.name, vs.codec_context.pix_fmt, a_s.codec_context.name) == (
            "h264",
            "yuv420p",
            "aac",
        )
        assert vs.average_rate == fps
        pts = [f.pts * f.time_base for f in c.decode(vs)]
    assert pts == [Fraction(i) / fps for i in range(n)]
    info = probe(path)
    # the audio track keeps its length up to AAC's padding to a whole 1024-sample frame
    assert 0 <= round(info.audio_end * sr) - audio.shape[0] <= 1024
    _flash_beep_check(read_clip(path, num_frames=n, fps=fps, sample_rate=sr), k, fps, sr, n)


def test_write_mp4_content_round_trip_and_odd_sizes(tmp_path):
    t, h, w = 6, 33, 47
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    video = torch.stack([yy, xx, -yy * 0.5]).unsqueeze(1).repeat(1, t, 1, 1) * 0.8
    sr = 16000
    tone = 0.5 * torch.sin(2 * math.pi * 440 * torch.arange(sr * t // 25) / sr)
    stereo = torch.stack([tone, -tone])
    path = write_mp4(tmp_path / "odd.mp4", video, stereo, 25, sr, crf=10, preset="ultrafast")
    clip = read_clip(path, num_frames=t, fps=25, sample_rate=sr, channels=2)
    assert clip.video.shape == (3, t, 34, 48)  # padded to even by repeating the last row/column
    assert (clip.video[:, :, :h, :w] - video).abs().mean() < 0.03
    torch.testing.assert_close(clip.video[:, :, h], clip.video[:, :, h - 1], atol=0.08, rtol=0)
    err = clip.audio[:, 400:-400] - stereo[:, 400:-400]
    snr = 10 * torch.log10(stereo[:, 400:-400].pow(2).mean() / err.pow(2).mean())
    assert snr > 20, snr
    # uint8 input gives the same file content as the equivalent float input
    u8 = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    again = read_clip(
        write_mp4(tmp_path / "u8.mp4", u8, stereo, 25, sr, crf=10, preset="ultrafast"),
        num_frames=t,
        fps=25,
        sample_rate=sr,
        channels=2,
    )
    torch.testing.assert_close(again.video, clip.video)


def test_write_mp4_is_atomic(tmp_path, monkeypatch):
    video = torch.zeros(3, 4, 16, 16)
    audio = torch.zeros(2560)
    target = write_mp4(tmp_path / "keep.mp4", video, audio, 25, 16000, preset="ultrafast")
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash while encoding audio")

    monkeypatch.setattr(av.AudioFrame, "from_ndarray", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_mp4(target, video.fill_(0.5), audio, 25, 16000, preset="ultrafast")
    with pytest.raises(RuntimeError):
        write_mp4(tmp_path / "new.mp4", video, audio, 25, 16000, preset="ultrafast")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]  # no temp, no partial file


def test_write_mp4_rejects_bad_input_clearly(tmp_path):
    with pytest.raises(ValueError, match="channels"):
        write_mp4(tmp_path / "x.mp4", torch.zeros(4, 2, 16, 16), torch.zeros(100), 25, 16000)
    with pytest.raises(ValueError, match="audio channels"):
        write_mp4(tmp_path / "x.mp4", torch.zeros(3, 2, 16, 16), torch.zeros(3, 100), 25, 16000)
    with pytest.raises(ValueError, match="fps"):
        write_mp4(tmp_path / "x.mp4", torch.zeros(3, 2, 16, 16), torch.zeros(100), 0, 16000)
    assert not any(tmp_path.iterdir())


# ---- preview ------------------------------------------------------------------------------------


def test_preview_png_shows_frames_above_an_aligned_spectrogram(tmp_path):
    import matplotlib.image as mpimg

    t, sr, fps = 8, 16000, 8
    video = torch.full((3, t, 24, 32), -1.0)
    video[0, : t // 2] = 1.0  # red first half
    video[2, t // 2 :] = 1.0  # blue second half
    audio = torch.zeros(t * sr // fps)
    half = audio.shape[0] // 2
    audio[half:] = 0.5 * torch.sin(
        2 * math.pi * 2000 * torch.arange(half) / sr
    )  # sound in 2nd half
    path = tmp_path / "p.png"
    path.write_bytes(b"old")
    layout = save_preview(path, video, audio, sr, fps=fps)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[:2] == (layout.height, layout.width)
    x0, y0, x1, y1 = layout.strip
    mid_y = (y0 + y1) // 2
    centre = [round(x0 + (x1 - x0) * (k + 0.5) / t) for k in range(t)]  # frame k's centre
    left_px = img[mid_y, centre[1], :3]
    right_px = img[mid_y, centre[6], :3]
    assert left_px[0] > 0.9 and left_px[2] < 0.1, left_px
    assert right_px[2] > 0.9 and right_px[0] < 0.1, right_px
    sx0, sy0, sx1, sy1 = layout.spectrogram
    assert sy0 > y1  # spectrogram is below the strip, same time axis
    assert (sx0, sx1) == (x0, x1)
    # loudest pixel of each time column: dark while silent (first half), bright after
    column_peak = img[sy0 + 2 : sy1 - 2, sx0 + 2 : sx1 - 2, :3].mean(axis=2).max(axis=0)
    w = column_peak.shape[0]
    assert column_peak[: int(0.45 * w)].max() < 0.1
    assert column_peak[int(0.55 * w) :].min() > 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


def test_preview_failure_keeps_the_old_png_and_leaves_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash while drawing")

    path = tmp_path / "p.png"
    path.write_bytes(b"old")
    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_preview(path, torch.zeros(3, 2, 8, 8), torch.zeros(4000), 16000, fps=8)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


class _CountingContainer:
    """Proxy of an open PyAV container that counts decoded frames (PyAV's classes are
    extension types, so the count is taken around them rather than patched in)."""

    def __init__(self, container):
        self.container, self.decoded = container, 0

    def seek(self, *args, **kwargs):
        return self.container.seek(*args, **kwargs)

    def decode(self, *args, **kwargs):
        for frame in self.container.decode(*args, **kwargs):
            self.decoded += 1
            yield frame


def test_reading_late_in_a_long_file_seeks_instead_of_decoding_from_the_start(tmp_path):
    from avblocks.data import media

    fps, n = 25, 250  # 10 s, a keyframe every 25 frames
    path = make_media(tmp_path / "long.mp4", fps=fps, num_frames=n, colors=index_colors(n), gop=25)
    times = [Fraction(8) + Fraction(k, fps) for k in range(8)]
    with av.open(str(path)) as c:
        counting = _CountingContainer(c)
        frames = media._decode_video(counting, c.streams.video[0], times, None, path)
        decoded = counting.decoded
    got = decode_index(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)
    assert got.tolist() == list(range(200, 208))
    assert decoded <= 25 + 8 + 1, decoded  # at most one GOP before the clip, not 200 frames
