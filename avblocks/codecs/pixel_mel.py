"""The dual-stream DiT's codec: pixel frames stay pixels, audio becomes normalised log-mel frames.

    codec = PixelMelCodec(spec)                      # Griffin-Lim, or inverse=Vocoder(...)
    video, frames = codec.encode(video, waveform)    # b 3 t h w in [-1, 1], b c t f w
    video, waveform = codec.decode(video, frames)

No autoencoder: at the synthetic set's 32 x 32 pixels and 64 mel bins a clip is small enough
to denoise directly (as the READ system denoises pixels), so the dual-stream system trains in
one stage and what a comparison of its couplings measures is the coupling, not a codec's
errors. The audio side is :class:`~avblocks.codecs.audio_frames.AudioFrames` (video-like
audio, normalised; its inverse turns generated frames back into a waveform).
"""

import torch
from torch import nn

from avblocks.codecs.audio_frames import AudioFrames
from avblocks.spec import AVSpec
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["PixelMelCodec"]


class PixelMelCodec(nn.Module):
    """``(video, waveform) <-> (video, normalised audio frames)`` for clips of ``spec``.

    Args:
        spec: the clips' description.
        inverse: the audio inverse (default Griffin-Lim), see :class:`AudioFrames`.
    """

    def __init__(self, spec: AVSpec, *, inverse: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.audio = AudioFrames(spec, inverse)

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        return (3, self.spec.num_frames, *self.spec.size)

    @property
    def audio_shape(self) -> tuple[int, int, int, int]:
        return (self.spec.channels, self.spec.num_frames, self.spec.mel.n_mels, self.spec.frame_columns)

    @torch.no_grad()
    @shapecheck
    def encode(self, video: Float[Tensor, "b 3 t h w"], waveform: Tensor) -> tuple[Tensor, Tensor]:
        """``(video b 3 t h w in [-1, 1], waveform b n | b ch n)`` -> ``(video, frames b c t f w)``."""
        frames = self.audio.encode(waveform)
        if frames.shape[2] != video.shape[2]:
            raise ValueError(f"the waveform gives {frames.shape[2]} frames of audio, the video has "
                             f"{video.shape[2]} frames")
        return video, frames

    @torch.no_grad()
    @shapecheck
    def decode(self, video: Float[Tensor, "b 3 t h w"], frames: Float[Tensor, "b c t f wa"]
               ) -> tuple[Tensor, Tensor]:
        """``(video, frames)`` -> ``(video clamped to [-1, 1], waveform)``."""
        return video.clamp(-1, 1), self.audio.decode(frames)
