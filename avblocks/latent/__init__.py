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
from avblocks.latent.volume import (
    FactorisedResBlock3d,
    VolumeDecoder,
    VolumeDecoderConfig,
    VolumeEncoder,
    VolumeEncoderConfig,
)

__all__ = [
    "AttentionPool",
    "FactorisedResBlock3d",
    "TriPlane",
    "TriPlaneProjector",
    "TriPlaneProjectorConfig",
    "TriPlaneUnprojector",
    "VolumeDecoder",
    "VolumeDecoderConfig",
    "VolumeEncoder",
    "VolumeEncoderConfig",
    "VolumeMix",
    "triplane_tokens",
    "volume_tokens",
]
