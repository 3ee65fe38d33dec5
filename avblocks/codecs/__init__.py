"""Codecs: media (video + waveform) <-> the tensor a denoiser sees, one per system.

- :class:`AudioFrames`: waveform <-> normalised video-like audio (every codec uses it);
- :class:`TriPlaneCodec`: ProAV-DiT's stacked tri-plane latent (MDSA + plane layout);
- :class:`ImageLatentCodec`: AV-DiT's per-image latents of frames and spectrogram images;
- :class:`FrameCodeCodec`: READ's one audio code per video frame (video stays pixels).
"""

from avblocks.codecs.audio_frames import AudioFrames
from avblocks.codecs.frame_codes import FrameCodeCodec
from avblocks.codecs.image_latent import ImageLatentCodec
from avblocks.codecs.tri_plane import TriPlaneCodec, tri_plane_shapes

__all__ = ["AudioFrames", "FrameCodeCodec", "ImageLatentCodec", "TriPlaneCodec", "tri_plane_shapes"]
