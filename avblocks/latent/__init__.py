"""Latent spaces: tri-plane projection, volume encoders/decoders, the MDSA autoencoder."""

from avblocks.latent.chunked import (
    decode_chunked,
    decode_volume_chunked,
    iter_decoded_chunks,
    temporal_halo,
)
from avblocks.latent.fusion import PlaneFusion
from avblocks.latent.image_autoencoder import (
    DiagonalGaussian,
    DiffusersImageAutoencoder,
    ImageAutoencoder,
    ImageAutoencoderConfig,
)
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

__all__ += [
    "ImageAutoencoder",
    "ImageAutoencoderConfig",
    "DiagonalGaussian",
    "DiffusersImageAutoencoder",
    "decode_chunked",
    "iter_decoded_chunks",
    "decode_volume_chunked",
    "temporal_halo",
]
