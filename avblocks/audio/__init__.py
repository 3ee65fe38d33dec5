"""Audio blocks: mel settings, video-like audio, log-mel normalisation, vocoders."""

from avblocks.audio.frame_codes import (
    CausalConv1d,
    CausalResBlock1d,
    FrameAudioCodec,
    FrameAudioCodecConfig,
    frame_infonce,
)
from avblocks.audio.hifigan import HiFiGAN
from avblocks.audio.mel import LogMelSpectrogram, MelConfig, log_mel_spectrogram, mel_transform
from avblocks.audio.normalize import LogMelNormalizer
from avblocks.audio.video_like import VideoLikeAudio
from avblocks.audio.vocoder import GriffinLim, Vocoder, vocos_config
from avblocks.audio.vocoder_folder import load_vocoder

__all__ = [
    "MelConfig",
    "LogMelSpectrogram",
    "log_mel_spectrogram",
    "mel_transform",
    "LogMelNormalizer",
    "VideoLikeAudio",
    "GriffinLim",
    "Vocoder",
    "vocos_config",
    "HiFiGAN",
    "load_vocoder",
]

__all__ += [
    "FrameAudioCodec",
    "FrameAudioCodecConfig",
    "frame_infonce",
    "CausalConv1d",
    "CausalResBlock1d",
]
