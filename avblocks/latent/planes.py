"""The names and the order of the tri-plane latents: written here once, read everywhere.

A volume (video ``t h w``, or video-like audio ``t f w``) is projected onto three planes,
named by the axes they keep: ``hw`` (pooled over time), ``th`` and ``tw``. A sounding video
has six: the video's three, then the audio's three. That order is the order of
:meth:`avblocks.latent.mdsa.AVLatent.planes`, of the stacked latent of
:class:`avblocks.dit.PlaneStack` (its ``t`` axis) and of ST-DiT's per-plane timesteps, so
"hold the audio clean" is ``clean[:, AUDIO_PLANES] = True`` everywhere.
"""

__all__ = ["PLANES", "PLANE_ORDER", "VIDEO_PLANES", "AUDIO_PLANES"]

PLANES: tuple[str, str, str] = ("hw", "th", "tw")
"""The planes of one volume, in :class:`~avblocks.latent.triplane.TriPlane` field order."""

PLANE_ORDER: tuple[str, ...] = tuple(f"{m}_{p}" for m in ("video", "audio") for p in PLANES)
"""The six planes of a sounding video: video hw, th, tw, then audio hw, th, tw."""

VIDEO_PLANES = slice(0, 3)
"""The video's planes in :data:`PLANE_ORDER` (an index into the planes axis)."""

AUDIO_PLANES = slice(3, 6)
"""The audio's planes in :data:`PLANE_ORDER`."""
