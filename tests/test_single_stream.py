"""Reading one stream of a user's file: sound from audio or video files, frames without sound,
a reference picture. Files are made here with PyAV (tests/media_factory.py)."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from avblocks.data import MediaError
from avblocks.data.single_stream import read_audio, read_image, read_video
from tests.media_factory import decode_index, index_colors, make_media


def write_wav(path, wave: np.ndarray, sample_rate: int):
    """A PCM wav of ``ch n`` float samples."""
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=sample_rate)
        s.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave, np.float32), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return path


def write_png(path, rgb: np.ndarray):
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.height, s.width, s.pix_fmt = rgb.shape[0], rgb.shape[1], "rgb24"
        for packet in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return path


def test_wav_at_another_rate_and_channel_count_is_resampled_and_mixed(tmp_path):
    sr, n = 22050, 22050
    t = np.arange(n) / sr
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 440 * t)
    path = write_wav(tmp_path / "tone.wav", np.stack([left, right]), sr)
    mono = read_audio(path, sample_rate=16000)
    assert mono.shape == (1, 16000)
    # the mix of the channels (0.375 amplitude) at 440 Hz, away from the resampler's edges
    reference = 0.375 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(mono[0, 1000:15000].numpy() - reference[1000:15000]).max() < 2e-3
    stereo = read_audio(path, sample_rate=16000, channels=2)
    assert stereo.shape == (2, 16000) and stereo[0].abs().max() > 1.9 * stereo[1].abs().max()


def test_a_window_of_the_audio_starts_where_asked(tmp_path):
    sr = 16000
    wave = np.zeros((1, 2 * sr), np.float32)
    wave[0, sr // 2 : sr // 2 + 160] = 0.9  # a click at 0.5 s
    path = write_wav(tmp_path / "click.wav", wave, sr)
    clip = read_audio(path, sample_rate=sr, start=0.25, duration=0.5)
    assert clip.shape == (1, 8000)
    assert abs(int(clip[0].abs().argmax()) - 4000) <= 2


def test_sound_of_a_video_file(tmp_path):
    path = make_media(tmp_path / "clip.mp4", fps=Fraction(25), sample_rate=16000, num_frames=25, tone=True)
    wave = read_audio(path, sample_rate=16000, duration=0.9)
    assert wave.shape == (1, 14400) and wave.abs().max() > 0.3


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: p.write_bytes(b"this is text, not media" * 20) and p, "cannot read"),
    (lambda p: make_media(p.with_suffix(".mp4"), audio=False), "no audio stream"),
    (lambda p: p.write_bytes(b"") or p, "empty file"),
])
def test_unusable_files_are_refused_naming_the_file(tmp_path, make, match):
    path = make(tmp_path / "input.wav")
    with pytest.raises(MediaError, match=match) as info:
        read_audio(path, sample_rate=16000)
    assert str(path) in str(info.value)


def test_too_short_says_how_long_the_file_is(tmp_path):
    path = write_wav(tmp_path / "short.wav", np.full((1, 8000), 0.1, np.float32), 16000)
    with pytest.raises(MediaError, match=r"too short: 0.500 s of audio, 2.000 s needed"):
        read_audio(path, sample_rate=16000, duration=2)


def test_video_without_sound_is_read_by_time(tmp_path):
    path = make_media(tmp_path / "silent.mp4", fps=Fraction(25), num_frames=25, audio=False,
                      colors=index_colors(25))
    video = read_video(path, num_frames=5, fps=5, size=(16, 16))
    assert video.shape == (3, 5, 16, 16)
    # clip frame k shows the source frame at the middle of [k/5, (k+1)/5): 25 * (k + 1/2) / 5
    assert list(decode_index(video)) == [2, 7, 12, 17, 22]


def test_reference_picture_from_png_and_from_a_video(tmp_path):
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # left half red
    image = read_image(write_png(tmp_path / "face.png", rgb), size=(16, 16))
    assert image.shape == (3, 16, 16) and -1 <= float(image.min()) and float(image.max()) <= 1
    assert image[0, :, :6].mean() > 0.9 and image[0, :, 10:].mean() < -0.9  # scaled to cover, centre crop
    first = read_image(make_media(tmp_path / "v.mp4", colors=index_colors(12)), size=(16, 16))
    assert decode_index(first[:, None]).tolist() == [0]
    with pytest.raises(MediaError, match="expected an image"):
        read_image(write_wav(tmp_path / "a.wav", np.zeros((1, 100), np.float32), 16000))
    assert torch.is_tensor(image)
