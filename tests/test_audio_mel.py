"""MelConfig validation and presets, the log-mel against torchaudio and vocos, the normaliser."""

import dataclasses
import math

import pytest
import torch
import torchaudio
from hypothesis import given
from hypothesis import strategies as st

from avblocks.audio import LogMelNormalizer, MelConfig, log_mel_spectrogram


def _reference_log_mel(x, *, sr, n_fft, hop, n_mels, f_min=0.0, f_max=None, window_fn=None,
                       power=1.0, mel_scale="htk", norm=None, center=True, floor=1e-7):
    """torchaudio's MelSpectrogram with explicit settings, then log(clamp(., floor))."""
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop_length=hop, f_min=f_min,
        f_max=f_max, n_mels=n_mels, window_fn=window_fn or torch.hann_window, power=power,
        center=center, pad_mode="reflect", norm=norm, mel_scale=mel_scale,
    )
    return torch.log(torch.clamp(transform(x), min=floor))


# ------------------------------------------------------------------ MelConfig validation
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sample_rate", 0),
        ("sample_rate", 16000.0),
        ("n_fft", -4),
        ("hop", 2048),  # > n_fft
        ("n_mels", 0),
        ("f_min", -1.0),
        ("f_max", 20000.0),  # > 24000 / 2
        ("f_min", 13000.0),  # >= f_max (= 12000)
        ("window", "kaiser"),
        ("center", 1),
        ("pad_mode", "zeros"),
        ("power", 1.5),
        ("mel_scale", "bark"),
        ("norm", "l2"),
        ("log_floor", 0.0),
        ("pad", -1),
        ("pad", 1024),  # >= n_fft
        ("magnitude_eps", -1.0),
    ],
)
def test_invalid_config_is_refused_naming_the_value(field, value):
    with pytest.raises(ValueError, match=field) as info:
        MelConfig(**{field: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_vocos_preset_matches_vocos_feature_extractor_settings():
    from vocos.feature_extractors import MelSpectrogramFeatures

    cfg = MelConfig.vocos()
    spec = MelSpectrogramFeatures().mel_spec  # vocos' own defaults
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.n_mels) == (
        spec.sample_rate, spec.n_fft, spec.hop_length, spec.n_mels)
    assert cfg.center == spec.spectrogram.center and cfg.pad_mode == spec.spectrogram.pad_mode
    assert cfg.power == spec.power and cfg.mel_scale == spec.mel_scale.mel_scale
    assert cfg.norm == spec.mel_scale.norm and cfg.log_floor == 1e-7
    assert cfg.f_min == spec.f_min and cfg.upper_frequency == 12000.0


def test_vocos_preset_log_mel_equals_vocos_features_on_random_audio():
    from vocos.feature_extractors import MelSpectrogramFeatures

    audio = torch.rand(2, 24000 // 3) * 2 - 1
    audio[1] *= 1e-4  # quiet enough that the 1e-7 floor is hit somewhere
    ours = log_mel_spectrogram(audio, MelConfig.vocos())
    theirs = MelSpectrogramFeatures(padding="center")(audio)
    assert ours.shape == theirs.shape == (2, 100, 1 + audio.shape[-1] // 256)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_pad_is_for_non_centred_frames_and_torchaudio_has_no_such_transform():
    with pytest.raises(ValueError, match="pad.*center=True"):
        MelConfig(pad=4)
    from avblocks.audio import mel_transform

    with pytest.raises(ValueError, match="no reflect pad"):
        mel_transform(MelConfig.hifigan())
    cfg = MelConfig.hifigan()
    assert cfg.half_hop_columns and not MelConfig.vocos().half_hop_columns
    assert [cfg.num_columns(n) for n in (256, 2816, 22528)] == [1, 11, 88]


def test_speech16k_preset():
    cfg = MelConfig.speech16k()
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.n_mels) == (16000, 640, 160, 80)
    assert cfg.sample_rate / cfg.hop == 100  # columns per second
    # vocos-compatible settings apart from the sizes
    assert MelConfig.vocos(sample_rate=16000, n_fft=640, hop=160, n_mels=80) == cfg
    assert MelConfig.speech16k(hop=200, n_fft=800).hop == 200


def test_differences_name_fields_and_resolve_f_max():
    a = MelConfig.vocos()
    assert a.differences(MelConfig.vocos(f_max=12000.0)) == []
    assert a.compatible_with(MelConfig.vocos(f_max=12000.0))
    diffs = a.differences(MelConfig.vocos(hop=240, power=2.0))
    assert diffs == ["hop: 256 != 240", "power: 1.0 != 2.0"]


@given(
    sr=st.sampled_from([8000, 16000, 22050, 24000]),
    hop=st.sampled_from([64, 100, 128, 160]),
    fft_mult=st.sampled_from([2, 4]),
    n_mels=st.integers(8, 40),
    power=st.sampled_from([1.0, 2.0]),
    scale_norm=st.sampled_from([("htk", None), ("slaney", "slaney"), ("htk", "slaney")]),
    window=st.sampled_from(["hann", "hamming"]),
    f_min=st.sampled_from([0.0, 50.0]),
    f_max_frac=st.sampled_from([None, 0.8]),
    n=st.integers(400, 3000),  # reflect padding needs n > n_fft // 2 (at most 320)
    leading=st.sampled_from([(1,), (2,), (2, 3)]),
)
def test_log_mel_equals_torchaudio(sr, hop, fft_mult, n_mels, power, scale_norm, window, f_min,
                                   f_max_frac, n, leading):
    n_fft = hop * fft_mult
    f_max = None if f_max_frac is None else f_max_frac * sr / 2
    cfg = MelConfig(sample_rate=sr, n_fft=n_fft, hop=hop, n_mels=n_mels, f_min=f_min,
                    f_max=f_max, window=window, power=power, mel_scale=scale_norm[0],
                    norm=scale_norm[1])
    x = torch.randn(*leading, n) * 0.1
    ours = log_mel_spectrogram(x, cfg)
    window_fn = {"hann": torch.hann_window, "hamming": torch.hamming_window}[window]
    ref = _reference_log_mel(x, sr=sr, n_fft=n_fft, hop=hop, n_mels=n_mels, f_min=f_min,
                             f_max=f_max, window_fn=window_fn, power=power,
                             mel_scale=scale_norm[0], norm=scale_norm[1])
    assert ours.shape == (*leading, n_mels, cfg.num_columns(n)) == (*leading, n_mels, 1 + n // hop)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_log_mel_float64_and_silence_floor():
    cfg = MelConfig.speech16k()
    x = torch.zeros(1, 1600, dtype=torch.float64)
    out = log_mel_spectrogram(x, cfg)
    assert out.dtype == torch.float64
    assert torch.all(out == math.log(1e-7))


# ------------------------------------------------------------------ normaliser
def _speech_like(sr, seconds=1.0, amplitude=0.5):
    """Harmonic 'vowel' (120 Hz, formants at 700/1200/2500 Hz) with a syllable envelope."""
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    out = torch.zeros_like(t)
    for k in range(1, int(4000 / 120)):
        f = 120 * k
        gain = sum(math.exp(-(((f - fc) / 150) ** 2)) for fc in (700, 1200, 2500)) + 0.02
        out += gain * torch.sin(2 * math.pi * f * t + k)
    out *= torch.sin(math.pi * 4 * t).abs()  # 4 syllables per second
    return (amplitude * out / out.abs().max()).float()[None]


def _clicks(sr, seconds=1.0):
    x = torch.zeros(1, int(sr * seconds))
    x[0, :: sr // 7] = 1.0
    return x


@pytest.mark.parametrize("cfg", [MelConfig.vocos(), MelConfig.speech16k(),
                                 MelConfig.vocos(power=2.0)], ids=["vocos", "speech16k", "power2"])
def test_normalizer_round_trip_and_range(cfg):
    norm = LogMelNormalizer(mel=cfg)
    sr = cfg.sample_rate
    t = torch.arange(sr) / sr
    signals = {
        "speech": _speech_like(sr),
        "clicks": _clicks(sr),
        "noise": torch.randn(1, sr) * 0.1,
        "full-scale tone": torch.sin(2 * math.pi * 997 * t)[None],
        "silence": torch.zeros(1, sr),
    }
    for name, x in signals.items():
        log_mel = log_mel_spectrogram(x, cfg)
        y = norm.normalize(log_mel)
        assert y.min() >= -1.0 - 1e-6, name
        assert y.max() <= 1.05, (name, y.max())
        # exact inverse (up to float32 rounding of an affine map)
        torch.testing.assert_close(norm.denormalize(y), log_mel, rtol=0, atol=1e-5)
    # silence is exactly -1; a full-scale tone reaches near the top of the range
    assert torch.all(norm(log_mel_spectrogram(signals["silence"], cfg)) == -1.0)
    assert norm(log_mel_spectrogram(signals["full-scale tone"], cfg)).max() > 0.9


def test_normalizer_constants_follow_the_formula():
    cfg = MelConfig.vocos()
    norm = LogMelNormalizer(mel=cfg)
    assert norm.low == pytest.approx(math.log(1e-7))
    # periodic Hann of length 1024 sums to 512; an HTK filter peaks at (almost) 1
    assert math.log(512) - 0.05 < norm.high <= math.log(512) + 1e-9
    x = torch.tensor([norm.low, norm.high, 0.0], dtype=torch.float64)
    expected = 2 * (x - norm.low) / (norm.high - norm.low) - 1
    torch.testing.assert_close(norm.normalize(x), expected)
    assert LogMelNormalizer(mel=MelConfig.vocos(power=2.0)).high == pytest.approx(
        2 * math.log(512) + (norm.high - math.log(512)))
    with pytest.raises(ValueError, match="high"):
        LogMelNormalizer(mel=cfg, high=-20.0)


def test_normalizer_round_trip_arbitrary_values():
    norm = LogMelNormalizer(mel=MelConfig.speech16k())
    values = torch.randn(3, 80, 50, dtype=torch.float64) * 10  # far outside the range too
    torch.testing.assert_close(norm.denormalize(norm.normalize(values)), values,
                               rtol=1e-12, atol=1e-12)
    assert dataclasses.is_dataclass(norm.mel)


def test_module_equals_function_and_has_no_state():
    from avblocks.audio import LogMelSpectrogram, mel_transform

    cfg = MelConfig.speech16k()
    module = LogMelSpectrogram(mel=cfg)
    x = torch.randn(2, 3, 4000) * 0.1
    assert torch.equal(module(x), log_mel_spectrogram(x, cfg))
    # the torchaudio transform built from the config is the reference, bit for bit
    assert torch.equal(module(x), torch.log(torch.clamp(mel_transform(cfg)(x), min=1e-7)))
    assert module.state_dict() == {}  # window and filterbank are functions of the config
    x64 = x.double()
    torch.testing.assert_close(module(x64), log_mel_spectrogram(x64, cfg))
    assert module(x64).dtype == torch.float64
