"""Waveforms <-> the normalised video-like audio a model sees, for one :class:`~avblocks.spec.AVSpec`.

Every codec starts here: a clip's waveform becomes its log-mel cut into one frame per video
frame (:class:`~avblocks.audio.VideoLikeAudio`), mapped to about ``[-1, 1]``
(:class:`~avblocks.audio.LogMelNormalizer`); generated frames come back by concatenating them
into one spectrogram and inverting it (:class:`~avblocks.audio.GriffinLim` by default, or a
real vocoder with the same ``decode(mel, mel_config)`` contract).

Choices:

- **Channels.** The model sees ``spec.channels`` audio channels; a ``b n`` waveform is one
  channel. When the spec is mono, a multichannel ``b ch n`` waveform is averaged first (what
  a reader asked for one channel returns).
- **Length.** :meth:`AudioFrames.encode` takes any length: ``t = n // samples_per_frame``
  frames (the samples of a trailing partial frame are dropped, as :class:`VideoLikeAudio`
  does), so a long waveform gives a long clip.
- **Decoded length.** :meth:`AudioFrames.decode` returns exactly ``t * samples_per_frame``
  samples for ``t`` frames (cut or zero-padded when an inverse gives a few samples more or
  less), clamped to ``[-1, 1]`` as a file would store it.
"""

import torch
from torch import nn

from avblocks.audio import GriffinLim, LogMelNormalizer, VideoLikeAudio
from avblocks.spec import AVSpec
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["AudioFrames"]


class AudioFrames(nn.Module):
    """``waveform b n | b ch n`` <-> normalised video-like audio ``b c t f w`` (module doc).

    Args:
        spec: the clip description (frame rate, sample rate, mel settings, channels).
        inverse: mel -> waveform, anything with ``decode(log_mel b f cols, mel_config) -> b n``
            and a ``mel`` equal to ``spec.mel`` (default: Griffin-Lim, no weights).
    """

    def __init__(self, spec: AVSpec, inverse: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.video_like = VideoLikeAudio(mel=spec.mel, fps=spec.fps)
        self.normalizer = LogMelNormalizer(mel=spec.mel)
        inverse = GriffinLim(mel=spec.mel) if inverse is None else inverse
        differences = spec.mel.differences(inverse.mel)
        if differences:
            raise ValueError(f"the audio inverse was made for another mel: {'; '.join(differences)} "
                             "(spec != inverse)")
        self.inverse = inverse

    @property
    def frame_columns(self) -> int:
        return self.video_like.frame_columns

    @shapecheck
    def encode(self, waveform: Float[Tensor, "b n"] | Float[Tensor, "b ch n"]) -> Float[Tensor, "b c t f w"]:
        """Normalised log-mel frames, ``c = spec.channels``."""
        if waveform.ndim == 3:
            if self.spec.channels == 1:
                waveform = waveform.mean(dim=1)
            elif waveform.shape[1] != self.spec.channels:
                raise ValueError(f"waveform has {waveform.shape[1]} channels, the spec "
                                 f"{self.spec.channels}")
        elif self.spec.channels != 1:
            raise ValueError(f"a b n waveform is mono; the spec has {self.spec.channels} channels")
        return self.normalizer.normalize(self.video_like(waveform))

    @shapecheck
    def log_mel(self, frames: Float[Tensor, "b c t f w"]) -> Float[Tensor, "b c f cols"]:
        """Normalised frames -> the clip's natural-log mel spectrogram (exact inverse reshape)."""
        return self.video_like.to_spectrogram(self.normalizer.denormalize(frames))

    @torch.no_grad()
    @shapecheck
    def decode(self, frames: Float[Tensor, "b c t f w"]) -> Float[Tensor, "b n"] | Float[Tensor, "b c n"]:
        """Waveform of ``t * samples_per_frame`` samples (``b n`` for mono, else ``b c n``)."""
        b, c, t = frames.shape[:3]
        log_mel = self.log_mel(frames.float())
        wave = self.inverse.decode(log_mel.flatten(0, 1), self.spec.mel)
        n = t * self.spec.samples_per_frame
        wave = torch.nn.functional.pad(wave[..., :n], (0, max(0, n - wave.shape[-1]))).clamp(-1, 1)
        wave = wave.reshape(b, c, n)
        return wave[:, 0] if c == 1 else wave
