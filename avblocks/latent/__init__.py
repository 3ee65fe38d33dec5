"""Latent spaces: tri-plane projection, volume encoders/decoders, the MDSA autoencoder."""

from avblocks.latent.fusion import PlaneFusion
from avblocks.latent.mdsa import MDSA, AVLatent, MDSAConfig, Posterior
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
    "MDSA",
    "MDSAConfig",
    "AVLatent",
    "Posterior",
    "PlaneFusion",
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
