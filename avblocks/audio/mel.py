"""Mel-spectrogram settings (:class:`MelConfig`) and the log-mel computation.

One frozen :class:`MelConfig` describes *every* setting that changes the numbers of a log-mel
spectrogram, so two spectrograms can be compared for compatibility by comparing configs
(the vocoders refuse a mel whose config differs from theirs). The computation is the one of
``torchaudio.transforms.MelSpectrogram`` built from the config (the same ``torch.stft`` call,
magnitude, and torchaudio's filterbank, step for step, so the numbers are bit-identical; see
:func:`mel_transform` for that transform itself), followed by ``log(clamp(mel, log_floor))``
(natural log), which is exactly what vocos does. It is written out here rather than calling
the transform because torchaudio's spectrogram does not trace under
``torch.compile(fullgraph=True)``; the tests compare it with torchaudio and with vocos.

Column conventions:

- ``center=True`` (vocos, torchaudio): the waveform is padded by ``n_fft // 2`` on both sides
  (``pad_mode``), so column ``j`` is centred at sample ``j * hop`` and a waveform of ``n``
  samples gives ``1 + n // hop`` columns.
- ``center=False`` with ``pad`` samples of ``pad_mode`` padding on both sides first (HiFi-GAN:
  ``pad = (n_fft - hop) / 2``, reflect): column ``j`` starts at sample ``j * hop - pad``, so
  with that HiFi-GAN padding it is centred at ``(j + 1/2) * hop`` and ``n`` samples (a
  multiple of ``hop``) give exactly ``n / hop`` columns.

The magnitude is ``|X|``, or ``sqrt(|X|^2 + magnitude_eps)`` when ``magnitude_eps > 0`` (the
HiFi-GAN recipe adds 1e-9 inside the square root).
"""

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torchaudio
from torch import nn

from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["MelConfig", "LogMelSpectrogram", "log_mel_spectrogram", "mel_transform"]

_WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "bartlett": torch.bartlett_window,
}
_PAD_MODES = ("reflect", "constant", "replicate", "circular")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class MelConfig:
    """Every setting of a log-mel spectrogram.

    Args:
        sample_rate: waveform sample rate in Hz.
        n_fft: FFT size; the window length is ``n_fft`` too (no shorter window option).
        hop: samples between columns.
        n_mels: mel bins (``f`` axis).
        f_min: lowest filter edge in Hz.
        f_max: highest filter edge in Hz; ``None`` means ``sample_rate / 2``.
        window: ``"hann"``, ``"hamming"``, ``"blackman"`` or ``"bartlett"`` (torch's periodic
            windows, as torchaudio uses them).
        center: pad ``n_fft // 2`` on both sides so column ``j`` is centred at ``j * hop``.
        pad_mode: padding mode of ``center`` and of ``pad`` (torchaudio's default ``"reflect"``).
        pad: with ``center=False``, samples of ``pad_mode`` padding on both sides before the
            STFT (HiFi-GAN: ``(n_fft - hop) // 2``); must be 0 with ``center=True``.
        power: ``1.0`` for magnitude, ``2.0`` for power.
        mel_scale: ``"htk"`` or ``"slaney"``.
        norm: filter normalisation, ``None`` or ``"slaney"`` (area normalisation).
        log_floor: values are clamped to at least this before the natural log.
        magnitude_eps: added to ``|X|^2`` before the square root (0: the plain ``|X|``).

    The defaults are the vocos settings (:meth:`vocos`).
    """

    sample_rate: int = 24000
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 100
    f_min: float = 0.0
    f_max: float | None = None
    window: str = "hann"
    center: bool = True
    pad_mode: str = "reflect"
    power: float = 1.0
    mel_scale: str = "htk"
    norm: str | None = None
    log_floor: float = 1e-7
    pad: int = 0
    magnitude_eps: float = 0.0

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop", "n_mels"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} ({value!r}) must be a positive int")
        if self.hop > self.n_fft:
            raise ValueError(f"hop ({self.hop}) must be at most n_fft ({self.n_fft})")
        nyquist = self.sample_rate / 2
        f_max = self.upper_frequency
        if not 0.0 <= self.f_min < f_max:
            raise ValueError(
                f"need 0 <= f_min ({self.f_min}) < f_max ({f_max}) for sample_rate "
                f"{self.sample_rate}"
            )
        if f_max > nyquist:
            raise ValueError(f"f_max ({f_max}) must be at most sample_rate / 2 ({nyquist})")
        if self.window not in _WINDOWS:
            raise ValueError(f"window ({self.window!r}) must be one of {sorted(_WINDOWS)}")
        if not isinstance(self.center, bool):
            raise ValueError(f"center ({self.center!r}) must be a bool")
        if self.pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode ({self.pad_mode!r}) must be one of {_PAD_MODES}")
        if self.power not in (1.0, 2.0):
            raise ValueError(f"power ({self.power!r}) must be 1.0 (magnitude) or 2.0 (power)")
        if self.mel_scale not in ("htk", "slaney"):
            raise ValueError(f"mel_scale ({self.mel_scale!r}) must be 'htk' or 'slaney'")
        if self.norm not in (None, "slaney"):
            raise ValueError(f"norm ({self.norm!r}) must be None or 'slaney'")
        if not (isinstance(self.log_floor, (int, float)) and self.log_floor > 0):
            raise ValueError(f"log_floor ({self.log_floor!r}) must be a positive number")
        if not _is_int(self.pad) or not 0 <= self.pad < self.n_fft:
            raise ValueError(f"pad ({self.pad!r}) must be an int in [0, n_fft = {self.n_fft})")
        if self.center and self.pad:
            raise ValueError(f"pad ({self.pad}) must be 0 with center=True (centring pads n_fft // 2 itself)")
        if not (isinstance(self.magnitude_eps, (int, float)) and self.magnitude_eps >= 0):
            raise ValueError(f"magnitude_eps ({self.magnitude_eps!r}) must be a number >= 0")

    # ---------------------------------------------------------------- presets
    @classmethod
    def vocos(cls, **overrides) -> "MelConfig":
        """The features of vocos' ``MelSpectrogramFeatures`` (``padding="center"``), as used by
        the released ``charactr/vocos-mel-24khz``: 24 kHz, n_fft 1024, hop 256, 100 mels,
        Hann window, centred with reflect padding, magnitude, HTK scale, no filter
        normalisation, natural log with a 1e-7 floor.

        Note: 24000 / 256 = 93.75 columns per second, so with a whole number of columns per
        video frame the valid frame rates are 93.75 / w (31.25, 18.75, 15.625, ... fps).
        """
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def hifigan(cls, **overrides) -> "MelConfig":
        """The mel of the original HiFi-GAN recipe (``meldataset.mel_spectrogram``), which its
        released V1/V2/V3 generators were trained on: 22.05 kHz, n_fft 1024, hop 256, window
        1024 (Hann), 80 bins over 0-8000 Hz with librosa's Slaney mel scale and Slaney (area)
        normalisation, reflect padding of ``(n_fft - hop) / 2`` on both sides and no
        centring, magnitude ``sqrt(|X|^2 + 1e-9)``, ``log(clamp(x, 1e-5))``.

        22050 / 256 = 86.13 columns per second: with ``w`` columns per video frame the frame
        rate is ``22050 / (256 w)`` (``Fraction(11025, 1408)`` fps at ``w = 11``). Overrides
        of ``n_fft`` or ``hop`` should pass the matching ``pad = (n_fft - hop) // 2``.
        """
        base = cls(sample_rate=22050, n_fft=1024, hop=256, n_mels=80, f_min=0.0, f_max=8000.0,
                   center=False, pad=(1024 - 256) // 2, pad_mode="reflect", power=1.0,
                   mel_scale="slaney", norm="slaney", log_floor=1e-5, magnitude_eps=1e-9)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def speech16k(cls, **overrides) -> "MelConfig":
        """16 kHz speech/sound-effects features: n_fft 640 (40 ms), hop 160 (10 ms, the usual
        speech hop), 80 mels, otherwise vocos-compatible (magnitude, HTK, no norm, 1e-7 floor),
        so a vocos vocoder can be trained on them.

        Hop 160 gives 100 columns per second: a whole number of columns per video frame at
        1, 2, 4, 5, 10, 20, 25, 50 and 100 fps (10 fps -> 10 columns, 25 fps -> 4). For 8 or
        16 fps use ``speech16k(hop=200, n_fft=800)`` (80 columns/s) or ``hop=125``.
        """
        base = cls(sample_rate=16000, n_fft=640, hop=160, n_mels=80)
        return dataclasses.replace(base, **overrides)

    # -------------------------------------------------------------- derived
    @property
    def upper_frequency(self) -> float:
        """``f_max`` with ``None`` resolved to ``sample_rate / 2``."""
        return float(self.sample_rate) / 2 if self.f_max is None else float(self.f_max)

    @property
    def n_freqs(self) -> int:
        """STFT bins: ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def log_silence(self) -> float:
        """The log-mel value of silence: ``log(log_floor)``."""
        return math.log(self.log_floor)

    def window_tensor(self, **kwargs) -> Tensor:
        """The analysis window (length ``n_fft``), ``kwargs`` go to the torch window function."""
        return _WINDOWS[self.window](self.n_fft, **kwargs)

    def num_columns(self, num_samples: int) -> int:
        """Columns of the spectrogram of ``num_samples`` samples."""
        if self.center:
            return 1 + num_samples // self.hop
        return 1 + (num_samples + 2 * self.pad - self.n_fft) // self.hop

    @property
    def half_hop_columns(self) -> bool:
        """Whether column ``j`` is centred at ``(j + 1/2) * hop`` (no centring, padding of
        ``(n_fft - hop) / 2``: the HiFi-GAN convention), so ``n`` samples give ``n / hop``."""
        return not self.center and 2 * self.pad == self.n_fft - self.hop

    def filterbank(self) -> Tensor:
        """The mel filterbank, ``(n_freqs, n_mels)``, as torchaudio builds it (on the CPU, also
        under another default device: torchaudio reads values back while building it, which a
        ``meta`` device cannot; modules move it with ``.to()``)."""
        with torch.device("cpu"):
            return torchaudio.functional.melscale_fbanks(
                n_freqs=self.n_freqs,
                f_min=self.f_min,
                f_max=self.upper_frequency,
                n_mels=self.n_mels,
                sample_rate=self.sample_rate,
                norm=self.norm,
                mel_scale=self.mel_scale,
            )

    def differences(self, other: "MelConfig") -> list[str]:
        """Human-readable ``"field: self_value != other_value"`` for every differing field
        (``f_max`` compared after resolving ``None``)."""
        out = []
        for field in dataclasses.fields(self):
            a, b = getattr(self, field.name), getattr(other, field.name)
            if field.name == "f_max":
                a, b = self.upper_frequency, other.upper_frequency
            if a != b:
                out.append(f"{field.name}: {a!r} != {b!r}")
        return out

    def compatible_with(self, other: "MelConfig") -> bool:
        """Whether both configs produce the same numbers (``f_max=None`` equals ``sr/2``)."""
        return not self.differences(other)


def mel_transform(mel: MelConfig) -> torchaudio.transforms.MelSpectrogram:
    """A fresh ``torchaudio.transforms.MelSpectrogram`` with the settings of ``mel`` (the
    reference the log-mel computation here reproduces). Settings torchaudio's transform has
    no equivalent for (``pad`` of ``pad_mode`` samples, ``magnitude_eps``) are a ValueError."""
    if mel.pad or mel.magnitude_eps:
        raise ValueError(f"torchaudio's MelSpectrogram has no reflect pad ({mel.pad}) nor magnitude_eps "
                         f"({mel.magnitude_eps}); compare such a MelConfig with log_mel_spectrogram")
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=mel.sample_rate,
        n_fft=mel.n_fft,
        win_length=mel.n_fft,
        hop_length=mel.hop,
        f_min=mel.f_min,
        f_max=mel.f_max,
        n_mels=mel.n_mels,
        window_fn=_WINDOWS[mel.window],
        power=mel.power,
        normalized=False,
        center=mel.center,
        pad_mode=mel.pad_mode,
        norm=mel.norm,
        mel_scale=mel.mel_scale,
    )


def _log_mel(waveform: Tensor, window: Tensor, fb: Tensor, mel: MelConfig) -> Tensor:
    # torchaudio.functional.spectrogram + MelScale, step for step, then the log.
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    if mel.pad:  # the HiFi-GAN recipe: pad, then a non-centred STFT
        flat = torch.nn.functional.pad(flat, (mel.pad, mel.pad), mode=mel.pad_mode)
    spec = torch.stft(
        flat,
        n_fft=mel.n_fft,
        hop_length=mel.hop,
        win_length=mel.n_fft,
        window=window,
        center=mel.center,
        pad_mode=mel.pad_mode,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    spec = spec.reshape(shape[:-1] + spec.shape[-2:])
    if mel.magnitude_eps:
        spec = (spec.real.square() + spec.imag.square() + mel.magnitude_eps).sqrt()
    else:
        spec = spec.abs()
    if mel.power != 1.0:
        spec = spec.pow(mel.power)
    mel_spec = torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)
    return torch.log(torch.clamp(mel_spec, min=mel.log_floor))


@functools.lru_cache(maxsize=32)
def _cached_tables(mel: MelConfig, device: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # Window and filterbank built once per (config, device, dtype).
    return (
        mel.window_tensor().to(device=device, dtype=dtype),
        mel.filterbank().to(device=device, dtype=dtype),
    )


@shapecheck
def log_mel_spectrogram(
    waveform: Float[Tensor, "*batch n"], mel: MelConfig
) -> Float[Tensor, "*batch f cols"]:
    """Natural-log mel spectrogram ``log(clamp(MelSpectrogram(waveform), log_floor))``.

    Any leading axes are kept (``b n -> b f cols``, ``b ch n -> b ch f cols``). The window and
    filterbank are built once per (config, device, dtype) and cached. For use inside a
    network (``.to(device)``, ``torch.compile``) prefer :class:`LogMelSpectrogram`.
    """
    window, fb = _cached_tables(mel, str(waveform.device), waveform.dtype)
    return _log_mel(waveform, window, fb, mel)


class LogMelSpectrogram(nn.Module):
    """Module form of :func:`log_mel_spectrogram` for use inside networks.

    The window and filterbank are built at construction (``forward`` builds nothing and
    compiles with ``torch.compile(fullgraph=True)``) and kept as non-persistent buffers: they
    follow ``.to(...)`` but stay out of ``state_dict`` (they are functions of the config).
    An input of another dtype than the buffers uses buffers cast to its dtype.
    """

    def __init__(self, *, mel: MelConfig):
        super().__init__()
        self.mel = mel
        self.register_buffer("window", mel.window_tensor(), persistent=False)
        self.register_buffer("fb", mel.filterbank(), persistent=False)

    @shapecheck
    def forward(self, waveform: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch f cols"]:
        dtype = waveform.dtype
        return _log_mel(waveform, self.window.to(dtype), self.fb.to(dtype), self.mel)
