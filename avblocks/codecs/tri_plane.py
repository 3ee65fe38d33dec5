"""ProAV-DiT's codec: a clip (video + waveform) <-> the tri-plane latent ST-DiT denoises.

    codec = TriPlaneCodec(spec, autoencoder=MDSA.from_pretrained(...), patch=(1, 16))
    latent = codec.encode(video, waveform)       # b c 6 s s (canvas) or b c L (packed)
    video, waveform = codec.decode(latent)       # b 3 t h w in [-1, 1], b n

What it owns, in order: the video-like audio and its normalisation and inverse
(:class:`~avblocks.codecs.audio_frames.AudioFrames`), the MDSA autoencoder (frozen, eval
mode), and the plane layout, one of :data:`LAYOUTS`:

- ``"canvas"`` (:class:`~avblocks.dit.PlaneStack`): the six planes in
  :data:`~avblocks.latent.planes.PLANE_ORDER`, each zero-padded into the top-left of one
  ``s x s`` canvas, stacked as ``b c 6 s s`` (:class:`~avblocks.dit.STDiT` denoises it);
- ``"packed"`` (:class:`~avblocks.dit.PlanePack`): the six planes' cells end to end,
  ``b c L``, no padding (:class:`~avblocks.dit.PackedSTDiT` denoises it).

Choices:

- **Plane shapes follow from the configuration**, not from encoding a dummy clip: the MDSA
  patches the video ``t h w`` by ``video_patch`` and the audio ``t f w`` (``f`` mel bins,
  ``w`` columns per frame) by ``audio_patch``; the video planes are then ``h' x w'``,
  ``t' x h'``, ``t' x w'`` and the audio planes ``f' x w_a'``, ``t' x f'``, ``t' x w_a'``.
  A patch that does not divide its axis is a ValueError naming both.
- **Canvas side** is the largest plane side rounded up to a multiple of both sides of the
  denoiser's patch ``(p, q)`` (their lcm), so every patch grid tiles the canvas exactly.
  The packed layout needs no patch: the denoiser cuts each plane itself.
- ``valid_mask`` (canvas ``6 s s``, packed ``L``, all True there) is True on real latent
  cells: noise and losses use it so the padding stays exactly zero.
- **Per-plane values** (timesteps, the held-clean mask) reach the diffusion helpers, which
  index frames along axis 2 of the latent, through :meth:`TriPlaneCodec.frame_values`:
  ``b 6`` as it is for the canvas, one value per cell (``b L``) for the packed latent.
- The codec never trains: encoding and decoding run without gradients; training the MDSA
  itself uses :meth:`TriPlaneCodec.audio_frames` for its inputs.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from avblocks.codecs.audio_frames import AudioFrames
from avblocks.dit.plane_pack import PlanePack
from avblocks.dit.plane_stack import PlaneStack
from avblocks.latent.mdsa import MDSA, AVLatent, MDSAConfig
from avblocks.spec import AVSpec
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["LAYOUTS", "TriPlaneCodec", "tri_plane_shapes"]

LAYOUTS = ("canvas", "packed")
"""The plane layouts a codec can produce (see the module docstring)."""


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
    """Clips <-> tri-plane latents in the chosen layout (see the module doc).

    Args:
        spec: the clips' description.
        autoencoder: a trained :class:`MDSA` (its latent scale calibrated).
        patch: the denoiser's patch ``p`` or ``(p, q)``; the canvas side is a multiple of both.
        layout: ``"canvas"`` (``b c 6 s s``) or ``"packed"`` (``b c L``).
        inverse: the audio inverse (default Griffin-Lim), see :class:`AudioFrames`.
    """

    def __init__(self, spec: AVSpec, autoencoder: MDSA, *, patch: int | Sequence[int] = 1,
                 layout: str = "canvas", inverse: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.audio = AudioFrames(spec, inverse)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        self.layout_name = layout
        self.layout = self.plane_layout(spec, autoencoder.config, patch, layout)

    @staticmethod
    def plane_layout(spec: AVSpec, config: MDSAConfig, patch: int | Sequence[int] = 1,
                     layout: str = "canvas") -> PlaneStack | PlanePack:
        """The latent layout of an autoencoder with ``config`` on ``spec``'s clips, for a
        denoiser with ``patch``: known from the configs alone (no weights needed)."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout ({layout!r}) must be one of {LAYOUTS}")
        patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        shapes = tri_plane_shapes(spec, config.video_patch, config.audio_patch)
        if layout == "canvas":
            return PlaneStack(shapes=shapes, channels=config.latent_channels, multiple=math.lcm(*patch))
        return PlanePack(shapes=shapes, channels=config.latent_channels)

    # ---------------------------------------------------------------- layout
    @property
    def channels(self) -> int:
        return self.layout.channels

    @property
    def side(self) -> int:
        """The canvas side ``s`` (canvas layout only)."""
        if self.layout_name != "canvas":
            raise AttributeError(f"a {self.layout_name} latent has no canvas side")
        return self.layout.side

    @property
    def num_planes(self) -> int:
        return self.layout.num_planes

    @property
    def plane_shapes(self) -> tuple[tuple[int, int], ...]:
        return self.layout.shapes

    @property
    def valid_mask(self) -> Tensor:
        """Canvas ``6 s s`` / packed ``L`` bool, True on real latent cells."""
        return self.layout.valid_mask

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return self.layout.latent_shape(batch)

    def frame_values(self, per_plane: Tensor) -> Tensor:
        """``b 6`` values (one per plane) along the latent's frame axis (see the module doc)."""
        return self.layout.frame_values(per_plane)

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
                      ) -> Float[Tensor, "b c *latent"]:
        """``(video, normalised audio frames)`` -> latent in the codec's layout."""
        return self.layout(self.autoencoder.encode(video, frames).planes())

    def encode(self, video: Tensor, waveform: Tensor) -> Tensor:
        """``(video b 3 t h w in [-1, 1], waveform b n)`` -> latent (``b c 6 s s`` / ``b c L``)."""
        return self.encode_frames(video, self.audio_frames(waveform))

    @torch.no_grad()
    @shapecheck
    def decode_frames(self, latent: Float[Tensor, "b c *latent"]) -> tuple[Tensor, Tensor]:
        """Latent -> ``(video b 3 t h w in [-1, 1], normalised audio frames b 1 t f w)``."""
        planes = [p.contiguous() for p in self.layout.split(latent)]
        video, frames = self.autoencoder.decode(AVLatent.from_planes(planes))
        return video.clamp(-1, 1), frames

    def decode(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Latent -> ``(video b 3 t h w in [-1, 1], waveform b n)``."""
        video, frames = self.decode_frames(latent)
        return video, self.waveform(frames)
