"""A small per-frame KL image autoencoder: images ``b c h w`` <-> latents ``b z h' w'``.

AV-DiT works in the latent space of an *image* autoencoder (Stable Diffusion's KL VAE in the
paper) shared by both modalities: every video frame and every audio spectrogram image is
encoded on its own. :class:`ImageAutoencoder` is that autoencoder, small enough to train on
CPU; :class:`DiffusersImageAutoencoder` wraps a diffusers ``AutoencoderKL`` loaded from a
local folder behind the same interface (only when diffusers is installed; imported lazily).

Choices (each ours; documented because callers rely on them):

- Layers: the convolutional :class:`~avblocks.latent.volume.VolumeEncoder` /
  :class:`~avblocks.latent.volume.VolumeDecoder` of the MDSA streams, run on one frame at a
  time (an image is a volume of one frame). Patch ``(1, downsample, downsample)``: a
  non-overlapping patch stem, ``depth`` residual blocks, a 1x1 head. With a single frame and
  zero padding the blocks' temporal ``(3, 1, 1)`` conv sees only its centre tap, so the codec
  is strictly per image; :meth:`ImageAutoencoder.encode_frames` folds ``t`` into the batch, so a frame's latent
  never depends on another frame.
- Bottleneck: a diagonal Gaussian (:class:`DiagonalGaussian`): the encoder outputs
  ``2 * latent_channels`` maps, mean and log-variance, the log-variance clamped to
  ``[-30, 20]`` (as the MDSA and SD's VAE) so ``exp`` never overflows. Its KL is
  :func:`avblocks.latent.losses.kl_divergence` (summed over latent values, batch mean).
- Latent scale: one stored factor (buffer ``latent_scale``, saved with the weights; 1 at
  init). :meth:`ImageAutoencoder.latents` returns ``scale * mean`` and :meth:`ImageAutoencoder.images` divides by it, so the
  diffusion stage sees unit-variance latents after :meth:`ImageAutoencoder.calibrate_scale` (1/std of the
  means of a batch; SD's 0.18215 is the same idea, fixed once).
- ``downsample`` must divide the image size; a size that does not raises a ``ValueError``
  naming the axis (no silent cropping or padding). Default ``downsample = 4`` and
  ``latent_channels = 4`` (SD's channel count; SD down-samples by 8, too much for 32x32 frames).
- :meth:`ImageAutoencoder.decode_frames` decodes ``chunk`` frames at a time, so long clips do not need memory
  for all of their frames' activations at once (the VAE-decode out-of-memory that video
  pipelines hit); decoding is per frame, so chunking changes results only by float
  rounding (batched convolutions may sum in another order).
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from avblocks.latent.losses import kl_divergence
from avblocks.latent.volume import VolumeDecoder, VolumeEncoder
from avblocks.saveload import SaveLoadMixin
from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "DiagonalGaussian",
    "ImageAutoencoder",
    "ImageAutoencoderConfig",
    "DiffusersImageAutoencoder",
]

LOGVAR_RANGE = (-30.0, 20.0)


@dataclass
class DiagonalGaussian:
    """A diagonal Gaussian posterior ``N(mean, exp(logvar))`` over latents of any layout."""

    mean: Tensor
    logvar: Tensor

    def __post_init__(self) -> None:
        if self.mean.shape != self.logvar.shape:
            raise ValueError(
                f"mean {tuple(self.mean.shape)} and logvar {tuple(self.logvar.shape)} differ in shape"
            )

    @property
    def std(self) -> Tensor:
        return (0.5 * self.logvar).exp()

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``mean + std * eps`` (reparameterised: gradients flow to mean and logvar)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                          dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL to ``N(0, I)``, summed over every latent value, averaged over the batch axis."""
        return kl_divergence(self.mean, self.logvar)


@dataclass
class ImageAutoencoderConfig:
    in_channels: int = 3
    latent_channels: int = 4
    hidden_channels: int = 64
    downsample: int = 4
    depth: int = 2
    groups: int = 8


class ImageAutoencoder(SaveLoadMixin, nn.Module):
    """Per-image KL autoencoder (see the module docstring for every choice).

    Args:
        in_channels: image channels (3 for RGB frames; spectrogram images are given as 3
            identical channels by the AV-DiT recipe, so one codec serves both modalities).
        latent_channels: channels ``z`` of the latent.
        hidden_channels: width of the convolutional trunk.
        downsample: spatial down-sampling factor (the patch side of the stem).
        depth: residual blocks in the encoder and in the decoder.
        groups: GroupNorm groups (must divide ``hidden_channels``).
    """

    config_class = ImageAutoencoderConfig

    def __init__(
        self,
        *,
        in_channels: int = 3,
        latent_channels: int = 4,
        hidden_channels: int = 64,
        downsample: int = 4,
        depth: int = 2,
        groups: int = 8,
    ):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample ({downsample}) must be >= 1")
        if latent_channels < 1:
            raise ValueError(f"latent_channels ({latent_channels}) must be >= 1")
        self.in_channels, self.latent_channels, self.downsample = in_channels, latent_channels, downsample
        patch = (1, downsample, downsample)
        self.encoder = VolumeEncoder(in_channels=in_channels, latent_channels=2 * latent_channels,
                                     hidden_channels=hidden_channels, patch=patch, depth=depth,
                                     groups=groups)
        self.decoder = VolumeDecoder(out_channels=in_channels, latent_channels=latent_channels,
                                     hidden_channels=hidden_channels, patch=patch, depth=depth,
                                     groups=groups)
        self.register_buffer("latent_scale", torch.ones(()))

    def latent_size(self, h: int, w: int) -> tuple[int, int]:
        """``(h', w')`` for an image of ``(h, w)``; ``ValueError`` naming the axis if it does not fit."""
        for name, size in (("h", h), ("w", w)):
            if size < self.downsample or size % self.downsample:
                raise ValueError(f"image axis {name} has size {size}, which is not a positive "
                                 f"multiple of downsample {self.downsample}")
        return h // self.downsample, w // self.downsample

    @shapecheck
    def encode(self, x: Float[Tensor, "b c h w"]) -> DiagonalGaussian:
        """Images -> posterior over ``b z h' w'`` (unscaled)."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"images have {x.shape[1]} channels, the autoencoder expects "
                             f"{self.in_channels}")
        self.latent_size(*x.shape[2:])
        moments = self.encoder(x.unsqueeze(2)).squeeze(2)
        mean, logvar = moments.chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar.clamp(*LOGVAR_RANGE))

    @shapecheck
    def decode(self, z: Float[Tensor, "b z hl wl"]) -> Float[Tensor, "b c h w"]:
        """Latents (unscaled) -> images ``b c (h' f) (w' f)``."""
        if z.shape[1] != self.latent_channels:
            raise ValueError(f"latents have {z.shape[1]} channels, the autoencoder expects "
                             f"{self.latent_channels}")
        return self.decoder(z.unsqueeze(2)).squeeze(2)

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b c h w"], generator: torch.Generator | None = None
    ) -> tuple[Float[Tensor, "b c h w"], DiagonalGaussian]:
        """Reconstruction from a posterior sample, and the posterior (for the KL term)."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior

    @shapecheck
    def encode_frames(self, video: Float[Tensor, "b c t h w"]) -> DiagonalGaussian:
        """Frames ``b c t h w`` -> posterior over ``b z t h' w'``, one frame at a time."""
        b = video.shape[0]
        post = self.encode(rearrange(video, "b c t h w -> (b t) c h w"))
        back = lambda v: rearrange(v, "(b t) z h w -> b z t h w", b=b)  # noqa: E731
        return DiagonalGaussian(back(post.mean), back(post.logvar))

    @shapecheck
    def decode_frames(
        self, z: Float[Tensor, "b z t hl wl"], chunk: int = 16
    ) -> Float[Tensor, "b c t h w"]:
        """Latent frames -> frames, ``chunk`` frames (of the flattened ``b t``) per decoder call."""
        if chunk < 1:
            raise ValueError(f"chunk ({chunk}) must be >= 1")
        b = z.shape[0]
        flat = rearrange(z, "b z t h w -> (b t) z h w")
        out = torch.cat([self.decode(part) for part in flat.split(chunk)], dim=0)
        return rearrange(out, "(b t) c h w -> b c t h w", b=b)

    @shapecheck
    def latents(self, video: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b z t hl wl"]:
        """Scaled posterior means of every frame: what the diffusion model sees."""
        return self.encode_frames(video).mean * self.latent_scale

    @shapecheck
    def images(self, z: Float[Tensor, "b z t hl wl"], chunk: int = 16) -> Float[Tensor, "b c t h w"]:
        """Inverse of :meth:`ImageAutoencoder.latents`: divide by the scale, decode every frame."""
        return self.decode_frames(z / self.latent_scale, chunk=chunk)

    @torch.no_grad()
    def calibrate_scale(self, video: Tensor) -> float:
        """Set ``latent_scale`` to 1 / std of the posterior means of ``video`` (``b c t h w``)."""
        std = float(self.encode_frames(video).mean.std())
        if not std > 0:
            raise ValueError(f"latents of the calibration batch have std {std}; cannot scale")
        self.latent_scale.fill_(1.0 / std)
        return 1.0 / std


class DiffusersImageAutoencoder(nn.Module):
    """A diffusers ``AutoencoderKL`` from a local folder, behind :class:`ImageAutoencoder`'s interface.

    ``encode`` -> :class:`DiagonalGaussian` (the VAE's own mean and log-variance), ``decode``,
    ``encode_frames`` / ``decode_frames`` / ``latents`` / ``images`` as above; ``latent_scale``
    is the folder's ``scaling_factor`` (0.18215 for SD's VAE). Needs diffusers; the import
    happens here, not at avblocks import, and the folder is loaded with
    ``local_files_only=True`` (weights never come from the network).
    """

    def __init__(self, folder: str | Path):
        super().__init__()
        try:
            from diffusers import AutoencoderKL
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("DiffusersImageAutoencoder needs the diffusers package; "
                              "use ImageAutoencoder instead") from error
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"no AutoencoderKL folder at {folder}")
        self.vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        self.in_channels = self.vae.config.in_channels
        self.latent_channels = self.vae.config.latent_channels
        self.downsample = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.register_buffer("latent_scale", torch.tensor(float(self.vae.config.scaling_factor)))

    latent_size = ImageAutoencoder.latent_size
    encode_frames = ImageAutoencoder.encode_frames
    decode_frames = ImageAutoencoder.decode_frames
    latents = ImageAutoencoder.latents
    images = ImageAutoencoder.images

    def encode(self, x: Tensor) -> DiagonalGaussian:
        dist = self.vae.encode(x).latent_dist
        return DiagonalGaussian(dist.mean, dist.logvar)

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z).sample
