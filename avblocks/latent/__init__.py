"""Latent spaces: tri-plane projection of volumes, volume encoders/decoders."""

from avblocks.latent.triplane import (
    AttentionPool,
    TriPlane,
    TriPlaneProjector,
    TriPlaneProjectorConfig,
    TriPlaneUnprojector,
    VolumeMix,
    triplane_tokens,
    volume_tokens,
)

__all__ = [
    "AttentionPool",
    "TriPlane",
    "TriPlaneProjector",
    "TriPlaneProjectorConfig",
    "TriPlaneUnprojector",
    "VolumeMix",
    "triplane_tokens",
    "volume_tokens",
]
