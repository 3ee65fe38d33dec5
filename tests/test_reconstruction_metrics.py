"""Reconstruction metrics against independent numpy/scipy references."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter

from avblocks.metrics.reconstruction import (
    gaussian_window,
    log_spectral_distance,
    mel_l1,
    power_spectrogram,
    psnr,
    ssim,
    video_psnr,
    video_ssim,
    waveform_lsd,
    waveform_mel_l1,
)

seeds = st.integers(0, 2**31 - 1)


def _rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- PSNR


@given(seeds)
def test_video_psnr_matches_direct_formula(seed):
    r = _rng(seed)
    target = r.uniform(-1, 1, size=(2, 3, 4, 8, 9))
    pred = np.clip(target + r.normal(0, 0.1, size=target.shape), -1, 1)
    got = video_psnr(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    for i in range(2):
        per_frame = [
            10 * math.log10(2.0**2 / np.mean((pred[i, :, k] - target[i, :, k]) ** 2))
            for k in range(4)
        ]
        assert got[i] == pytest.approx(np.mean(per_frame), abs=1e-9)
    whole = psnr(torch.from_numpy(pred), torch.from_numpy(target), data_range=1.0).numpy()
    ref = [10 * math.log10(1.0 / np.mean((pred[i] - target[i]) ** 2)) for i in range(2)]
    np.testing.assert_allclose(whole, ref, atol=1e-9)


def test_psnr_identical_is_inf_and_range_shift():
    x = torch.rand(1, 3, 2, 4, 4) * 2 - 1
    assert torch.isinf(video_psnr(x, x)).all()
    y = x + 0.05
    # data_range 2 vs 1: +20 log10(2) dB
    assert float(psnr(y, x) - psnr(y, x, data_range=1.0)) == pytest.approx(20 * math.log10(2))
    assert float(psnr(y, x)) == pytest.approx(10 * math.log10(4 / 0.05**2), abs=1e-4)
    with pytest.raises(ValueError, match=r"data_range \(0.0\)"):
        psnr(y, x, data_range=0.0)
    with pytest.raises(ValueError, match="differ"):
        psnr(y, x[:, :2])


# ---------------------------------------------------------------- SSIM


def _ssim_scipy(x, y, data_range=2.0):
    """Wang et al. 2004 with scipy's Gaussian (sigma 1.5, radius 5 -> 11 taps), valid crop."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def g(z):
        return gaussian_filter(z, sigma=1.5, radius=5)[5:-5, 5:-5]

    mx, my = g(x), g(y)
    vx, vy, cxy = g(x * x) - mx**2, g(y * y) - my**2, g(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return m.mean()


@given(seeds, st.integers(11, 24), st.integers(11, 24), st.floats(0.02, 1.0))
def test_ssim_matches_scipy_reference(seed, h, w, noise):
    r = _rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 3 + c) * np.cos(yy / 4) for c in range(3)])  # (3, h, w)
    target = base[None]
    pred = np.clip(target + r.normal(0, noise, size=target.shape), -1, 1)
    got = float(ssim(torch.from_numpy(pred), torch.from_numpy(target)))
    ref = np.mean([_ssim_scipy(pred[0, c], target[0, c]) for c in range(3)])
    assert got == pytest.approx(ref, abs=1e-7)


def test_ssim_of_random_images_and_identical_images():
    r = _rng(0)
    a, b = r.uniform(-1, 1, (2, 1, 16, 20)), r.uniform(-1, 1, (2, 1, 16, 20))
    got = ssim(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    ref = [_ssim_scipy(a[i, 0], b[i, 0]) for i in range(2)]
    np.testing.assert_allclose(got, ref, atol=1e-7)
    assert abs(got).max() < 0.2  # unrelated noise: near 0
    same = ssim(torch.from_numpy(a).float(), torch.from_numpy(a).float())
    torch.testing.assert_close(same, torch.ones(2), atol=1e-6, rtol=0)


def test_video_ssim_is_mean_of_frame_ssims():
    r = _rng(1)
    v = torch.from_numpy(r.uniform(-1, 1, (2, 3, 3, 12, 13)))
    u = (v + 0.3 * torch.from_numpy(r.normal(size=v.shape))).clamp(-1, 1)
    frames = torch.stack([ssim(u[:, :, k], v[:, :, k]) for k in range(3)], dim=1)
    torch.testing.assert_close(video_ssim(u, v), frames.mean(dim=1))
    torch.testing.assert_close(video_ssim(v, v), torch.ones(2, dtype=v.dtype))


def test_ssim_errors_and_window():
    g = gaussian_window(11, 1.5)
    assert g.shape == (11,) and float(g.sum()) == pytest.approx(1.0)
    assert float(g[5] / g[6]) == pytest.approx(math.exp(1 / (2 * 1.5**2)))
    with pytest.raises(ValueError, match=r"10x12 are smaller than the 11x11"):
        ssim(torch.zeros(1, 1, 10, 12), torch.zeros(1, 1, 10, 12))
    with pytest.raises(ValueError, match=r"window size \(4\)"):
        gaussian_window(4)


# ---------------------------------------------------------------- LSD and mel L1


def _lsd_numpy(p_est, p_ref, eps=1e-10):
    d = np.log10(p_ref + eps) - np.log10(p_est + eps)  # (..., freq, frames)
    return np.sqrt((d**2).mean(axis=-2)).mean(axis=-1)


@given(seeds)
def test_lsd_matches_numpy_formula_and_is_zero_for_identical(seed):
    r = _rng(seed)
    ref = r.exponential(1.0, size=(2, 3, 17, 9))
    est = ref * r.lognormal(0, 0.5, size=ref.shape)
    got = log_spectral_distance(torch.from_numpy(est), torch.from_numpy(ref)).numpy()
    np.testing.assert_allclose(got, _lsd_numpy(est, ref), rtol=1e-12)
    same = log_spectral_distance(torch.from_numpy(ref), torch.from_numpy(ref))
    assert float(same.abs().max()) == 0.0


def test_lsd_of_a_constant_gain_is_its_log():
    p = torch.rand(1, 5, 7, dtype=torch.float64) + 0.1
    # every bin off by 10x in power -> |log10 ratio| = 1 everywhere
    assert float(log_spectral_distance(10 * p, p, eps=1e-30)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        log_spectral_distance(-p, p)


def _power_stft_numpy(x, n_fft, hop):
    pad = n_fft // 2
    xp = np.pad(x, (pad, pad), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    n_frames = 1 + (len(xp) - n_fft) // hop
    frames = np.stack([xp[i * hop : i * hop + n_fft] * window for i in range(n_frames)], axis=-1)
    return np.abs(np.fft.rfft(frames, axis=0)) ** 2  # (freq, frames)


def test_waveform_lsd_matches_numpy_stft():
    r = _rng(3)
    target = r.normal(size=(2, 4000))
    pred = target + 0.3 * r.normal(size=target.shape)
    p = power_spectrogram(torch.from_numpy(target), n_fft=512, hop_length=128).numpy()
    np.testing.assert_allclose(p[0], _power_stft_numpy(target[0], 512, 128), rtol=1e-9, atol=1e-9)
    got = waveform_lsd(torch.from_numpy(pred), torch.from_numpy(target), n_fft=512, hop_length=128)
    ref = [
        _lsd_numpy(_power_stft_numpy(pred[i], 512, 128), _power_stft_numpy(target[i], 512, 128))
        for i in range(2)
    ]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-7)
    assert float(waveform_lsd(torch.from_numpy(target), torch.from_numpy(target)).abs().max()) == 0


def test_mel_l1_matches_numpy_and_scaled_waveform():
    r = _rng(4)
    a, b = r.normal(size=(2, 1, 3, 8, 5)), r.normal(size=(2, 1, 3, 8, 5))
    got = mel_l1(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, np.abs(a - b).reshape(2, -1).mean(axis=1), rtol=1e-12)

    from avblocks.audio.mel import MelConfig

    mel = MelConfig(sample_rate=16000, n_fft=256, hop=64, n_mels=16)  # magnitude (power 1)
    x = torch.randn(2, 4000)
    # doubling the waveform doubles every mel magnitude: log difference ln 2 everywhere
    got = waveform_mel_l1(2 * x, x, mel=mel)
    torch.testing.assert_close(got, torch.full((2,), math.log(2.0)), atol=1e-4, rtol=0)
    assert float(waveform_mel_l1(x, x, mel=mel).max()) == 0.0
