"""ProAV-DiT's codec: a clip (video + waveform) <-> the stacked tri-plane latent ST-DiT denoises.

    codec = TriPlaneCodec(spec, autoencoder=MDSA.from_pretrained(...), patch=(1, 16))
    latent = codec.encode(video, waveform)       # b c 6 s s
    video, waveform = codec.decode(latent)       # b 3 t h w in [-1, 1], b n

What it owns, in order: the video-like audio and its normalisation and inverse
(:class:`~avblocks.codecs.audio_frames.AudioFrames`), the MDSA autoencoder (frozen, eval
mode), and the plane layout (:class:`~avblocks.dit.PlaneStack`: the six planes in
:data:`~avblocks.latent.planes.PLANE_ORDER`, each zero-padded into the top-left of one
``s x s`` canvas).

Choices:

- **Plane shapes follow from the configuration**, not from encoding a dummy clip: the MDSA
  patches the video ``t h w`` by ``video_patch`` and the audio ``t f w`` (``f`` mel bins,
  ``w`` columns per frame) by ``audio_patch``; the video planes are then ``h' x w'``,
  ``t' x h'``, ``t' x w'`` and the audio planes ``f' x w_a'``, ``t' x f'``, ``t' x w_a'``.
  A patch that does not divide its axis is a ValueError naming both.
- **Canvas side** is the largest plane side rounded up to a multiple of both sides of the
  denoiser's patch ``(p, q)`` (their lcm), so every patch grid tiles the canvas exactly.
- ``valid_mask`` (``6 s s``) is True on real latent cells: noise and losses use it so the
  padding stays exactly zero.
- The codec never trains: encoding and decoding run without gradients; training the MDSA
  itself uses :meth:`audio_frames` for its inputs.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from avblocks.codecs.audio_frames import AudioFrames
from avblocks.dit.plane_stack import PlaneStack
from avblocks.latent.mdsa import MDSA, AVLatent, MDSAConfig
from avblocks.spec import AVSpec
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["TriPlaneCodec", "tri_plane_shapes"]


def _patched(name: str, size: int, patch: int, source: str) -> int:
    if patch < 1 or size % patch:
        raise ValueError(f"{source} {name} ({size}) is not a multiple of the autoencoder's patch ({patch})")
    return size // patch


def tri_plane_shapes(spec: AVSpec, video_patch: Sequence[int], audio_patch: Sequence[int]) -> list[tuple[int, int]]:
    """``(rows, cols)`` of the six planes of a clip of ``spec`` under an MDSA with these patches."""
    h, w = spec.size
    t = _patched("frames", spec.num_frames, video_patch[0], "the clip's")
    hv, wv = _patched("height", h, video_patch[1], "the frame"), _patched("width", w, video_patch[2], "the frame")
    ta = _patched("frames", spec.num_frames, audio_patch[0], "the clip's")
    fa = _patched("mel bins", spec.mel.n_mels, audio_patch[1], "the spectrogram's")
    wa = _patched("columns per frame", spec.frame_columns, audio_patch[2], "the spectrogram's")
    return [(hv, wv), (t, hv), (t, wv), (fa, wa), (ta, fa), (ta, wa)]


class TriPlaneCodec(nn.Module):
    """Clips <-> stacked tri-plane latents ``b c 6 s s`` (see the module doc).

    Args:
        spec: the clips' description.
        autoencoder: a trained :class:`MDSA` (its latent scale calibrated).
        patch: the denoiser's patch ``p`` or ``(p, q)``; the canvas side is a multiple of both.
        inverse: the audio inverse (default Griffin-Lim), see :class:`AudioFrames`.
    """

    def __init__(self, spec: AVSpec, autoencoder: MDSA, *, patch: int | Sequence[int] = 1,
                 inverse: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.audio = AudioFrames(spec, inverse)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        self.stack = self.layout(spec, autoencoder.config, patch)

    @staticmethod
    def layout(spec: AVSpec, config: MDSAConfig, patch: int | Sequence[int] = 1) -> PlaneStack:
        """The latent canvas of an autoencoder with ``config`` on ``spec``'s clips, for a
        denoiser with ``patch``: known from the configs alone (no weights needed)."""
        patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        shapes = tri_plane_shapes(spec, config.video_patch, config.audio_patch)
        return PlaneStack(shapes=shapes, channels=config.latent_channels, multiple=math.lcm(*patch))

    # ---------------------------------------------------------------- layout
    @property
    def channels(self) -> int:
        return self.stack.channels

    @property
    def side(self) -> int:
        return self.stack.side

    @property
    def num_planes(self) -> int:
        return self.stack.num_planes

    @property
    def plane_shapes(self) -> tuple[tuple[int, int], ...]:
        return self.stack.shapes

    @property
    def valid_mask(self) -> Tensor:
        """``6 s s`` bool, True on real latent cells."""
        return self.stack.valid_mask

    def latent_shape(self, batch: int) -> tuple[int, int, int, int, int]:
        return (batch, self.channels, self.num_planes, self.side, self.side)

    # ---------------------------------------------------------------- audio
    def audio_frames(self, waveform: Tensor) -> Tensor:
        """Waveform -> the normalised video-like audio the MDSA takes (``b 1 t f w``)."""
        return self.audio.encode(waveform)

    def waveform(self, frames: Tensor) -> Tensor:
        """Normalised audio frames -> waveform of exactly ``t * samples_per_frame`` samples."""
        return self.audio.decode(frames)

    # ---------------------------------------------------------------- latents
    @torch.no_grad()
    @shapecheck
    def encode_frames(self, video: Float[Tensor, "b 3 t h w"], frames: Float[Tensor, "b 1 t f wa"]
                      ) -> Float[Tensor, "b c p s s"]:
        """``(video, normalised audio frames)`` -> stacked latent."""
        return self.stack.stack(self.autoencoder.encode(video, frames).planes())

    def encode(self, video: Tensor, waveform: Tensor) -> Tensor:
        """``(video b 3 t h w in [-1, 1], waveform b n)`` -> stacked latent ``b c 6 s s``."""
        return self.encode_frames(video, self.audio_frames(waveform))

    @torch.no_grad()
    @shapecheck
    def decode_frames(self, latent: Float[Tensor, "b c p s s"]) -> tuple[Tensor, Tensor]:
        """Stacked latent -> ``(video b 3 t h w in [-1, 1], normalised audio frames b 1 t f w)``."""
        video, frames = self.autoencoder.decode(AVLatent.from_planes(list(self.stack.unstack(latent))))
        return video.clamp(-1, 1), frames

    def decode(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Stacked latent -> ``(video b 3 t h w in [-1, 1], waveform b n)``."""
        video, frames = self.decode_frames(latent)
        return video, self.waveform(frames)
