"""READ's codec: the driving audio -> one code per video frame; the video stays pixel frames.

The READ-style system denoises pixel frames directly (at the synthetic set's 32 x 32 a frame
is 3072 values, cheaper than a video codec and its errors), so only the audio is coded:
waveform -> normalised video-like audio (:class:`~avblocks.codecs.audio_frames.AudioFrames`)
-> :class:`~avblocks.audio.frame_codes.FrameAudioCodec` codes ``b t d``. The codes are causal:
code ``k`` depends on the audio of frames ``0 .. k`` only, so encoding a whole track at once
equals encoding it as it streams.
"""

import torch
from torch import nn

from avblocks.audio.frame_codes import FrameAudioCodec
from avblocks.codecs.audio_frames import AudioFrames
from avblocks.spec import AVSpec
from avblocks.typing import Tensor

__all__ = ["FrameCodeCodec"]


class FrameCodeCodec(nn.Module):
    """Waveform ``b n`` -> frame codes ``b t d``; pixel frames pass through (module doc).

    Args:
        spec: the clips' description (mono audio).
        audio_codec: a trained :class:`FrameAudioCodec` for ``spec.mel`` (one code per frame);
            ``None`` gives the audio frames alone (what training the codec needs).
    """

    def __init__(self, spec: AVSpec, audio_codec: FrameAudioCodec | None = None):
        super().__init__()
        self.spec = spec
        self.audio = AudioFrames(spec)
        if audio_codec is not None:
            expected = (spec.channels, spec.mel.n_mels, spec.frame_columns, 1)
            got = (audio_codec.in_channels, audio_codec.mel_bins, audio_codec.columns_per_frame,
                   audio_codec.frames_per_code)
            if got != expected:
                raise ValueError(f"the audio codec takes (channels, mel bins, columns per frame, frames "
                                 f"per code) = {got}; the spec gives {expected}")
            audio_codec = audio_codec.eval().requires_grad_(False)
        self.audio_codec = audio_codec

    @property
    def code_dim(self) -> int:
        return self._codec().code_dim

    def _codec(self) -> FrameAudioCodec:
        if self.audio_codec is None:
            raise ValueError("this FrameCodeCodec has no audio codec (built for the audio frames only)")
        return self.audio_codec

    @torch.no_grad()
    def codes_of_frames(self, frames: Tensor, chunk: int = 64) -> Tensor:
        """Normalised audio frames ``b 1 t f w`` -> codes ``b t d`` (``chunk`` clips at a time)."""
        codec = self._codec()
        return torch.cat([codec.encode(frames[i : i + chunk]) for i in range(0, len(frames), chunk)])

    def codes(self, waveform: Tensor) -> Tensor:
        """Waveform ``b n`` -> one code per whole video frame, ``b t d``."""
        return self.codes_of_frames(self.audio.encode(waveform))
