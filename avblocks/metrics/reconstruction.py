"""Reconstruction metrics for the autoencoders: video PSNR / SSIM, audio LSD and mel L1.

Every function returns one value per sample (``b``, or the leading axes), so callers choose
how to average over a data set. Definitions (stated because papers differ):

PSNR (:func:`psnr`, :func:`video_psnr`)
    ``10 log10(R^2 / MSE)`` with ``R = data_range``; avblocks video lives in ``[-1, 1]``, so
    ``R = 2`` by default (pass ``data_range=1.0`` for ``[0, 1]``, ``255.0`` for bytes).
    :func:`psnr` takes the MSE over everything but the batch axis; :func:`video_psnr` takes
    it per frame (over ``c h w``) and averages the per-frame PSNRs over ``t`` (the usual
    video-codec convention). A frame with zero error has PSNR ``+inf``, and so does the
    average then; no epsilon hides that.

SSIM (:func:`ssim`, :func:`video_ssim`)
    Wang, Bovik, Sheikh & Simoncelli (2004): local statistics under an 11x11 Gaussian
    window with sigma 1.5 (normalised to sum 1), ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2`` with
    ``K1 = 0.01``, ``K2 = 0.03``, ``R = data_range`` (2 for ``[-1, 1]``),

        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),

    the variances being the biased (window-weighted) ones. The map is computed only where
    the window fits ("valid", as in the authors' reference code: no padding), averaged
    over positions and channels; images must be at least 11x11. No automatic
    down-sampling of large images (the authors' script does it; we leave resizing to the
    caller). :func:`video_ssim` is the per-frame SSIM averaged over ``t``.

LSD (:func:`log_spectral_distance`, :func:`waveform_lsd`)
    On power spectrograms ``P`` (reference) and ``P^`` (estimate), ``freq x frames``:

        LSD = mean_frames sqrt( mean_freq ( log10(P + eps) - log10(P^ + eps) )^2 ),

    ``eps = 1e-10``. This is the convention of the audio super-resolution literature
    (log10 of power, no dB factor); LSD in dB is ``10 x`` this. :func:`waveform_lsd` first
    takes the power STFT: Hann window (periodic), ``n_fft`` 2048, hop 512, centred frames
    with reflect padding, one-sided, ``|X|^2``.

Mel L1 (:func:`mel_l1`, :func:`waveform_mel_l1`)
    Mean absolute difference of *log*-mel values per sample (for video-like audio
    ``b c t f w``, over ``c t f w``). :func:`waveform_mel_l1` computes the log-mels of two
    waveforms with one :class:`avblocks.audio.mel.MelConfig` first.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from avblocks.typing import shapecheck

__all__ = [
    "psnr",
    "video_psnr",
    "ssim",
    "video_ssim",
    "gaussian_window",
    "log_spectral_distance",
    "power_spectrogram",
    "waveform_lsd",
    "mel_l1",
    "waveform_mel_l1",
]


def _check_same(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")


def _check_range(data_range: float) -> None:
    if not data_range > 0:
        raise ValueError(f"data_range ({data_range}) must be > 0")


@shapecheck
def psnr(
    pred: Float[Tensor, "b ..."], target: Float[Tensor, "b ..."], *, data_range: float = 2.0
) -> Float[Tensor, " b"]:
    """``10 log10(data_range^2 / MSE)`` per sample, MSE over all non-batch axes."""
    _check_same(pred, target)
    _check_range(data_range)
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).to(pred.dtype)


@shapecheck
def video_psnr(
    pred: Float[Tensor, "b c t h w"], target: Float[Tensor, "b c t h w"], *, data_range: float = 2.0
) -> Float[Tensor, " b"]:
    """Per-frame PSNR (MSE over ``c h w``) averaged over frames; video in ``[-1, 1]`` -> R=2."""
    _check_range(data_range)
    mse = (pred.double() - target.double()).pow(2).mean(dim=(1, 3, 4))  # b t
    return (10.0 * torch.log10(data_range**2 / mse)).mean(dim=1).to(pred.dtype)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """1-D Gaussian ``exp(-x^2 / (2 sigma^2))`` on ``x = -(size//2) .. size//2``, sums to 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size ({size}) must be a positive odd number")
    if not sigma > 0:
        raise ValueError(f"sigma ({sigma}) must be > 0")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


@shapecheck
def ssim(
    pred: Float[Tensor, "b c h w"],
    target: Float[Tensor, "b c h w"],
    *,
    data_range: float = 2.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Float[Tensor, " b"]:
    """SSIM of Wang et al. (2004) per image; see the module docstring for every choice."""
    _check_range(data_range)
    _, c, h, w = pred.shape
    if h < window_size or w < window_size:
        raise ValueError(
            f"images of {h}x{w} are smaller than the {window_size}x{window_size} SSIM window"
        )
    # float64 for the local moments: E[x^2] - E[x]^2 cancels badly in float32.
    x, y = pred.double(), target.double()
    g = gaussian_window(window_size, sigma).to(x.device)
    kh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(z: Tensor) -> Tensor:  # separable Gaussian, "valid" (no padding), per channel
        return F.conv2d(F.conv2d(z, kh, groups=c), kw, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).mean(dim=(1, 2, 3)).to(pred.dtype)


@shapecheck
def video_ssim(
    pred: Float[Tensor, "b c t h w"],
    target: Float[Tensor, "b c t h w"],
    *,
    data_range: float = 2.0,
) -> Float[Tensor, " b"]:
    """Per-frame :func:`ssim` (11x11 Gaussian, sigma 1.5) averaged over frames."""
    b, _, t = pred.shape[:3]
    frames = ssim(
        pred.transpose(1, 2).flatten(0, 1),
        target.transpose(1, 2).flatten(0, 1),
        data_range=data_range,
    )
    return frames.view(b, t).mean(dim=1)


@shapecheck
def log_spectral_distance(
    pred_power: Float[Tensor, "*batch freq frames"],
    target_power: Float[Tensor, "*batch freq frames"],
    *,
    eps: float = 1e-10,
) -> Float[Tensor, "*batch"]:
    """``mean_frames sqrt(mean_freq (log10(P + eps) - log10(P^ + eps))^2)`` on power spectra."""
    if not eps > 0:
        raise ValueError(f"eps ({eps}) must be > 0")
    if (pred_power < 0).any() or (target_power < 0).any():
        raise ValueError("power spectrograms must be non-negative (pass |X|^2, not log values)")
    diff = torch.log10(target_power.double() + eps) - torch.log10(pred_power.double() + eps)
    return diff.pow(2).mean(dim=-2).sqrt().mean(dim=-1).to(pred_power.dtype)


@shapecheck
def power_spectrogram(
    waveform: Float[Tensor, "*batch n"], *, n_fft: int = 2048, hop_length: int = 512
) -> Float[Tensor, "*batch freq frames"]:
    """``|STFT|^2``: periodic Hann window of ``n_fft``, centred frames (reflect pad), one-sided."""
    if n_fft < 2 or hop_length < 1:
        raise ValueError(f"n_fft ({n_fft}) must be >= 2 and hop_length ({hop_length}) >= 1")
    if waveform.shape[-1] <= n_fft // 2:
        raise ValueError(
            f"waveform of {waveform.shape[-1]} samples is too short for n_fft {n_fft} "
            f"(reflect padding needs more than {n_fft // 2})"
        )
    lead = waveform.shape[:-1]
    window = torch.hann_window(n_fft, periodic=True, dtype=waveform.dtype, device=waveform.device)
    spec = torch.stft(
        waveform.reshape(-1, waveform.shape[-1]),
        n_fft=n_fft,
        hop_length=hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        onesided=True,
        return_complex=True,
    )
    power = spec.real**2 + spec.imag**2
    return power.reshape(*lead, *power.shape[-2:])


@shapecheck
def waveform_lsd(
    pred: Float[Tensor, "*batch n"],
    target: Float[Tensor, "*batch n"],
    *,
    n_fft: int = 2048,
    hop_length: int = 512,
    eps: float = 1e-10,
) -> Float[Tensor, "*batch"]:
    """:func:`log_spectral_distance` of the :func:`power_spectrogram` of two waveforms."""
    return log_spectral_distance(
        power_spectrogram(pred, n_fft=n_fft, hop_length=hop_length),
        power_spectrogram(target, n_fft=n_fft, hop_length=hop_length),
        eps=eps,
    )


@shapecheck
def mel_l1(pred: Float[Tensor, "b ..."], target: Float[Tensor, "b ..."]) -> Float[Tensor, " b"]:
    """Mean ``|pred - target|`` of log-mel values per sample (e.g. ``b c t f w`` -> ``b``)."""
    _check_same(pred, target)
    return (pred - target).abs().flatten(1).mean(dim=1)


@shapecheck
def waveform_mel_l1(
    pred: Float[Tensor, "b n"], target: Float[Tensor, "b n"], *, mel
) -> Float[Tensor, " b"]:
    """:func:`mel_l1` of the log-mel spectrograms (``avblocks.audio.mel``) of two waveforms.

    ``mel`` is an :class:`avblocks.audio.mel.MelConfig`; both waveforms use the same one.
    """
    from avblocks.audio.mel import log_mel_spectrogram  # lazy: keeps metrics import light

    return mel_l1(log_mel_spectrogram(pred, mel), log_mel_spectrogram(target, mel))
