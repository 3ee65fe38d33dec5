"""Video-like audio: one log-mel spectrogram per video frame, stacked along ``t``.

ProAV-DiT cuts the waveform into one segment per video frame and stacks the segments'
spectrograms, so audio gets the video's ``t`` axis: ``b c t f w`` (``f`` mel bins, ``w`` columns
per frame). Choices made here (the paper does not say):

- **One spectrogram, then a reshape.** The log-mel of the whole clip is computed once and
  its columns are split into groups of ``w``; cutting the waveform first would give each
  segment its own padded edges. So ``to_spectrogram(forward(x))`` is exactly (bit for bit)
  the clip's spectrogram, and the vocoder sees one seamless spectrogram.
- **Alignment.** Video frame ``k`` covers samples ``[k*sr/fps, (k+1)*sr/fps)``. With a centred
  STFT column ``j`` is centred at sample ``j*hop``; audio frame ``k`` holds columns
  ``[k*w, (k+1)*w)``, whose centres ``k*sr/fps + i*hop`` (``i < w``) all lie inside video frame
  ``k``. Hence ``w = sr / (fps * hop)`` must be a whole number, else :class:`ValueError`
  (with the nearest valid hops and sample rates).
- **HiFi-GAN's columns** (``center=False`` with ``(n_fft - hop) / 2`` samples of padding,
  :meth:`MelConfig.hifigan`): column ``j`` is centred at ``(j + 1/2) * hop``, so the centres
  ``k*sr/fps + (i + 1/2)*hop`` of audio frame ``k`` lie inside video frame ``k`` too, by half
  a hop more on the left than on the right. Any other non-centred padding is refused.
- **Trailing audio.** ``t = n // (sr/fps)``: a trailing partial frame is dropped (the audio of a
  video frame that does not exist), and the waveform is cut to ``t*sr/fps`` samples *before*
  the STFT, so the result depends only on the audio of the ``t`` frames. The centred STFT of
  those samples has ``t*w + 1`` columns; the last one is centred on the end boundary (half of
  it is padding) and is dropped (HiFi-GAN's padding gives exactly ``t*w``). A vocoder then
  turns the ``t*w`` columns back into ``hop * t * w = t*sr/fps`` samples: exactly the video's
  duration.
- **Resampling is explicit.** Pass ``input_sample_rate`` when your waveforms are at another
  rate than ``mel.sample_rate``: ``forward`` resamples them with
  ``torchaudio.functional.resample`` (windowed sinc, torchaudio's defaults) first.
- **Channels.** ``b n`` gives ``c = 1``; ``b ch n`` gives ``c = ch`` (each channel its own
  spectrogram).
- **Memory.** ``forward`` estimates what the transform allocates (the complex STFT, its
  magnitude and the output) before computing it, and refuses a waveform whose estimate is over
  ``max_bytes`` (default: :func:`avblocks.memory.memory_limit`) with a ``ValueError`` naming
  the size: a 10-hour soundtrack is a request to cut into clips, not to die in the allocator.
"""

from fractions import Fraction

import torch
import torchaudio
from einops import rearrange
from torch import nn

from avblocks.audio.mel import LogMelSpectrogram, MelConfig
from avblocks.memory import check_fits
from avblocks.timing import as_fraction, frame_columns
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["VideoLikeAudio"]


class VideoLikeAudio(nn.Module):
    """Waveform ``b n`` / ``b ch n`` -> video-like log-mel frames ``b c t f w`` (see module doc).

    Args:
        mel: spectrogram settings; ``mel.sample_rate`` is the rate the spectrogram is made at.
        fps: video frame rate (int, float or :class:`fractions.Fraction`).
        input_sample_rate: rate of the waveforms given to ``forward``; ``None`` means
            ``mel.sample_rate``. When different, ``forward`` resamples first.
        max_bytes: the most one ``forward`` may allocate (estimated); ``None``: the memory
            limit of :mod:`avblocks.memory`.

    Raises:
        ValueError: if ``mel.sample_rate / (fps * mel.hop)`` is not a whole number (the message
            names the ratio and the nearest valid hops and sample rates), or if ``mel.center``
            is False without HiFi-GAN's padding (columns would not lie inside their frames).
    """

    def __init__(
        self,
        *,
        mel: MelConfig,
        fps: int | float | Fraction,
        input_sample_rate: int | None = None,
        max_bytes: int | None = None,
    ):
        super().__init__()
        self.mel = mel
        self.max_bytes = max_bytes
        self.fps = as_fraction(fps)
        if input_sample_rate is None:
            input_sample_rate = mel.sample_rate
        if isinstance(input_sample_rate, bool) or not isinstance(input_sample_rate, int):
            raise ValueError(f"input_sample_rate ({input_sample_rate!r}) must be an int")
        if input_sample_rate <= 0:
            raise ValueError(f"input_sample_rate ({input_sample_rate}) must be positive")
        self.input_sample_rate = input_sample_rate
        if not (mel.center or mel.half_hop_columns):
            raise ValueError(
                "VideoLikeAudio needs mel.center=True (column j centred at sample j*hop) or "
                "center=False with pad = (n_fft - hop) / 2 (HiFi-GAN: centred at (j + 1/2) * hop) "
                f"to align columns with video frames; got center=False, pad={mel.pad}"
            )
        try:
            columns = frame_columns(mel.sample_rate, self.fps, mel.hop)
        except ValueError as e:
            raise ValueError(f"{e} (make the spectrogram at such a rate with "
                             "dataclasses.replace(mel, sample_rate=...) and pass "
                             "input_sample_rate=<your rate> to resample)") from None
        self._columns = columns
        self.log_mel = LogMelSpectrogram(mel=mel)  # built once; no state_dict entries

    @property
    def frame_columns(self) -> int:
        """``w``: spectrogram columns per video frame, ``sr / (fps * hop)``."""
        return self._columns

    @property
    def samples_per_frame(self) -> int:
        """Samples (at ``mel.sample_rate``) per video frame, ``sr / fps = w * hop``."""
        return self._columns * self.mel.hop

    def num_frames(self, num_samples: int) -> int:
        """Frames ``t`` made from ``num_samples`` samples at ``mel.sample_rate`` (floor)."""
        return num_samples // self.samples_per_frame

    def resample(self, waveform: Tensor) -> Tensor:
        """``waveform`` from ``input_sample_rate`` to ``mel.sample_rate`` (identity if equal)."""
        if self.input_sample_rate == self.mel.sample_rate:
            return waveform
        return torchaudio.functional.resample(
            waveform, self.input_sample_rate, self.mel.sample_rate
        )

    def output_bytes(self, batch: int, num_samples: int) -> int:
        """What ``forward`` allocates for ``batch`` x ``num_samples`` samples at
        ``input_sample_rate`` (all channels): the resampled copy, the complex STFT (8 bytes a
        bin), its magnitude and mel projection, and the output."""
        n = num_samples * self.mel.sample_rate // self.input_sample_rate
        columns = n // self.mel.hop + 1
        bins = self.mel.n_fft // 2 + 1
        return batch * (4 * n + columns * (12 * bins + 8 * self.mel.n_mels))

    def _check_size(self, waveform: Tensor) -> None:
        batch = waveform.shape[0] * (waveform.shape[1] if waveform.ndim == 3 else 1)
        nbytes = self.output_bytes(batch, waveform.shape[-1])
        seconds = waveform.shape[-1] / self.input_sample_rate
        check_fits(f"video-like audio of {batch} waveform(s) of {seconds:.1f} s", nbytes, self.max_bytes)

    @shapecheck
    def forward(
        self, waveform: Float[Tensor, "b n"] | Float[Tensor, "b ch n"]
    ) -> Float[Tensor, "b c t f w"]:
        if not torch.compiler.is_compiling():
            self._check_size(waveform)
        x = self.resample(waveform)
        if x.ndim == 2:
            x = x[:, None]
        t = self.num_frames(x.shape[-1])
        if t == 0:
            raise ValueError(
                f"waveform has {x.shape[-1]} samples at {self.mel.sample_rate} Hz, fewer than "
                f"one video frame ({self.samples_per_frame} samples at {self.fps} fps)"
            )
        used = t * self.samples_per_frame
        pad = self.mel.n_fft // 2 if self.mel.center else self.mel.pad
        if self.mel.pad_mode == "reflect" and used <= pad:
            raise ValueError(
                f"{t} frame(s) = {used} samples is too short for reflect padding of "
                f"{pad} samples; give more than that"
            )
        w = self._columns
        if x.shape[0] == 0 or x.shape[1] == 0:  # an empty batch gives empty frames, as in torch
            return x.new_zeros(x.shape[0], x.shape[1], t, self.mel.n_mels, w)
        if x.dtype in (torch.float16, torch.bfloat16):  # FFTs need float32; so does a log-mel's range
            x = x.float()
        spec = self.log_mel(x[..., : t * self.samples_per_frame])
        return rearrange(spec[..., : t * w], "b c f (t w) -> b c t f w", w=w)

    @shapecheck
    def to_spectrogram(self, frames: Float[Tensor, "b c t f w"]) -> Float[Tensor, "b c f cols"]:
        """Concatenate the frames back to one spectrogram (the inverse reshape, exact)."""
        if frames.shape[-1] != self._columns:
            raise ValueError(
                f"frames have {frames.shape[-1]} columns per frame, expected {self._columns}"
            )
        return rearrange(frames, "b c t f w -> b c f (t w)")

    def extra_repr(self) -> str:
        return (
            f"fps={self.fps}, sample_rate={self.mel.sample_rate}, hop={self.mel.hop}, "
            f"frame_columns={self._columns}, input_sample_rate={self.input_sample_rate}"
        )
