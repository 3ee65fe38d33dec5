"""VideoLikeAudio: frame counts, impulse alignment, exact split/concatenate, torchaudio reference."""

import math
import re
from fractions import Fraction

import pytest
import torch
import torchaudio
from hypothesis import assume, given
from hypothesis import strategies as st

from avblocks.audio import MelConfig, VideoLikeAudio, log_mel_spectrogram
from avblocks.typing import TYPECHECK

FPS = [8, 10, 25, Fraction(25, 2)]
HOPS = [40, 64, 80]


@st.composite
def setups(draw):
    """A valid (mel, fps) pair: the sample rate is built as fps * hop * w."""
    fps = draw(st.sampled_from(FPS))
    hop = draw(st.sampled_from(HOPS))
    w = draw(st.integers(1, 4))
    sr = fps * hop * w
    assert Fraction(sr).denominator == 1
    mel = MelConfig(sample_rate=int(sr), n_fft=4 * hop, hop=hop, n_mels=8)
    return mel, fps, w


def _reference(x, mel):
    """Log-mel from torchaudio with the same settings, spelled out independently."""
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=mel.sample_rate, n_fft=mel.n_fft, hop_length=mel.hop, n_mels=mel.n_mels,
        power=1.0, center=True, pad_mode="reflect", mel_scale="htk", norm=None,
    )
    return torch.log(torch.clamp(transform(x), min=1e-7))


@given(setup=setups(), frames=st.integers(1, 5), extra=st.floats(0, 0.999),
       channels=st.integers(0, 2))
def test_frames_match_video_and_split_equals_global(setup, frames, extra, channels):
    mel, fps, w = setup
    assume(frames * w > 2)  # reflect padding needs more than n_fft/2 = 2 hops of audio
    block = VideoLikeAudio(mel=mel, fps=fps)
    spf = block.samples_per_frame
    assert spf * fps == mel.sample_rate and block.frame_columns == w == spf // mel.hop
    n = frames * spf + int(extra * spf)  # T video frames plus a partial one
    shape = (2, n) if channels == 0 else (2, channels, n)
    x = torch.randn(shape) * 0.1
    out = block(x)
    c = 1 if channels == 0 else channels
    assert out.shape == (2, c, frames, mel.n_mels, w)  # t == T
    assert block.num_frames(n) == frames

    # one global spectrogram of the T frames' audio, cut into groups of w columns (exact)
    x3 = x if channels else x[:, None]
    global_spec = log_mel_spectrogram(x3[..., : frames * spf], mel)
    assert global_spec.shape[-1] == frames * w + 1  # the end-boundary column is dropped
    assert torch.equal(block.to_spectrogram(out), global_spec[..., : frames * w])
    for k in range(frames):
        assert torch.equal(out[:, :, k], global_spec[..., k * w : (k + 1) * w])

    # and that spectrogram is torchaudio's
    ref = _reference(x3[..., : frames * spf], mel)[..., : frames * w]
    torch.testing.assert_close(block.to_spectrogram(out), ref, rtol=1e-5, atol=1e-5)


@given(setup=setups(), frames=st.integers(2, 6), where=st.floats(0, 0.9999),
       extra=st.integers(0, 50))
def test_impulse_lands_in_its_video_frame(setup, frames, where, extra):
    mel, fps, w = setup
    assume(frames * w > 2)
    block = VideoLikeAudio(mel=mel, fps=fps)
    spf = block.samples_per_frame
    n = frames * spf
    s = int(where * n)
    x = torch.zeros(1, n + min(extra, spf - 1))
    x[0, s] = 1.0
    out = block(x)
    energy = (out - math.log(mel.log_floor)).sum(dim=(1, 3, 4))[0]  # above the silence floor
    peak = int(energy.argmax())
    expected = math.floor(s * fps / mel.sample_rate)
    assert expected == s // spf
    allowed = {expected}
    if s - expected * spf < mel.hop:  # within one column of the frame's start
        allowed.add(expected - 1)
    if (expected + 1) * spf - s <= mel.hop:  # within one column of its end
        allowed.add(expected + 1)
    assert peak in allowed, (s, spf, mel.hop, energy.tolist())
    # energy stays within the frames the window can reach (n_fft/2 = 2 hops each side)
    reach = {k for k in range(frames) if k * spf - 2 * mel.hop <= s < (k + 1) * spf + 2 * mel.hop}
    assert all(energy[k] == 0 for k in range(frames) if k not in reach)


def test_trailing_partial_frame_is_dropped():
    mel = MelConfig.speech16k()
    block = VideoLikeAudio(mel=mel, fps=10)
    x = torch.zeros(1, 3 * 1600 + 1000)
    x[0, 3 * 1600 + 500] = 1.0  # audio after the last whole video frame
    out = block(x)
    assert out.shape == (1, 1, 3, 80, 10)
    assert torch.all(out == math.log(1e-7))  # cut before the STFT: it leaves no trace


@pytest.mark.parametrize(
    ("sr", "fps", "hop"),
    [(24000, 25, 256), (16000, 24, 160), (16000, 8, 160), (44100, 30, 512)],
)
def test_non_integer_columns_raise_with_suggestions(sr, fps, hop):
    mel = MelConfig(sample_rate=sr, n_fft=4 * hop, hop=hop, n_mels=40)
    with pytest.raises(ValueError) as info:
        VideoLikeAudio(mel=mel, fps=fps)
    message = str(info.value)
    ratio = sr / (fps * hop)
    assert str(sr) in message and str(fps) in message and str(hop) in message
    assert f"{ratio:.6g}" in message
    # every suggestion actually works
    hops = re.search(r"nearest valid hops at \d+ Hz: \[([\d, ]*)\]", message)
    rates = re.search(r"nearest valid sample rates for hop \d+: \[([\d, ]*)\]", message)
    assert rates is not None
    for rate in map(int, rates.group(1).split(", ")):
        assert rate > 0 and (rate / (fps * hop)).is_integer()
        VideoLikeAudio(mel=MelConfig(sample_rate=rate, n_fft=4 * hop, hop=hop, n_mels=40), fps=fps)
    if (sr / fps).is_integer():
        assert hops is not None
        near = list(map(int, hops.group(1).split(", ")))
        assert near and all((sr / fps) % h == 0 for h in near)
        assert min(near) < hop < max(near)
    else:
        assert "no hop works" in message


def test_vocos_preset_valid_frame_rates():
    # 24000 / 256 = 93.75 columns per second: 31.25 fps gives 3 columns per frame
    block = VideoLikeAudio(mel=MelConfig.vocos(), fps=Fraction(125, 4))
    assert block.frame_columns == 3 and block.samples_per_frame == 768
    assert VideoLikeAudio(mel=MelConfig.vocos(), fps=31.25).fps == Fraction(125, 4)


def test_float_and_fraction_fps_agree():
    mel = MelConfig.speech16k(hop=80, n_fft=320, n_mels=40)
    a = VideoLikeAudio(mel=mel, fps=12.5)
    b = VideoLikeAudio(mel=mel, fps=Fraction(25, 2))
    x = torch.randn(1, 5000)
    assert a.frame_columns == b.frame_columns == 16
    assert torch.equal(a(x), b(x))


def test_multichannel_equals_each_channel_alone():
    block = VideoLikeAudio(mel=MelConfig.speech16k(), fps=25)
    x = torch.randn(2, 3, 16000) * 0.1
    out = block(x)
    assert out.shape == (2, 3, 25, 80, 4)
    for ch in range(3):
        assert torch.equal(out[:, ch : ch + 1], block(x[:, ch]))


def test_resampling_option_matches_audio_made_at_the_target_rate():
    mel = MelConfig.speech16k()
    block = VideoLikeAudio(mel=mel, fps=10, input_sample_rate=48000)
    direct = VideoLikeAudio(mel=mel, fps=10)

    def tone(sr):  # the same 1 s of 440 Hz + 3 kHz at any sample rate
        t = torch.arange(sr, dtype=torch.float64) / sr
        return (0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.sin(2 * math.pi * 3000 * t))

    a = block(tone(48000).float()[None])
    b = direct(tone(16000).float()[None])
    assert a.shape == b.shape == (1, 1, 10, 80, 10)  # 48000 samples at 48 kHz: 10 frames
    # away from the resampler's edge ramp (first/last frame) and from the near-silent bins
    # (leakage around -12) that the resampler's anti-alias roll-off changes
    a, b = a[:, :, 1:-1], b[:, :, 1:-1]
    loud = b > -9.0
    assert loud.float().mean() > 0.2
    assert (a - b)[loud].abs().max() < 0.05


def test_errors_for_short_input_and_bad_frames():
    block = VideoLikeAudio(mel=MelConfig.speech16k(), fps=10)
    with pytest.raises(ValueError, match="fewer than one video frame"):
        block(torch.zeros(1, 1599))
    with pytest.raises(ValueError, match="too short for reflect padding"):
        VideoLikeAudio(mel=MelConfig.speech16k(), fps=100)(torch.zeros(1, 300))
    with pytest.raises(ValueError, match="columns per frame"):
        block.to_spectrogram(torch.zeros(1, 1, 2, 80, 9))
    with pytest.raises(ValueError, match="center"):
        VideoLikeAudio(mel=MelConfig.speech16k(center=False), fps=10)
    with pytest.raises(ValueError, match="fps"):
        VideoLikeAudio(mel=MelConfig.speech16k(), fps=0)
    with pytest.raises(ValueError, match="input_sample_rate"):
        VideoLikeAudio(mel=MelConfig.speech16k(), fps=10, input_sample_rate=44100.0)


@pytest.mark.skipif(not TYPECHECK, reason="shape checks disabled")
def test_shape_check_rejects_wrong_rank():
    block = VideoLikeAudio(mel=MelConfig.speech16k(), fps=10)
    with pytest.raises(Exception, match="b n|b ch n|Float"):
        block(torch.zeros(1, 1, 1, 3200))


def test_no_state_dict_entries():
    assert VideoLikeAudio(mel=MelConfig.speech16k(), fps=10).state_dict() == {}


@pytest.mark.slow
def test_compiles_fullgraph():
    block = VideoLikeAudio(mel=MelConfig.speech16k(), fps=10)
    x = torch.randn(2, 16000) * 0.1
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x), rtol=1e-5, atol=1e-5)
