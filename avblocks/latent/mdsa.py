"""MDSA: the Multi-scale Dual-stream Spatio-temporal Autoencoder of ProAV-DiT.

One stream per modality, video ``b 3 t h w`` in [-1, 1] and video-like audio ``b 1 t f w``
(normalised log-mel frames, see :class:`avblocks.audio.LogMelNormalizer`)::

    encode:  VolumeEncoder -> TriPlaneProjector -> PlaneFusion (both streams) -> bottleneck
    decode:  per-plane 1x1 -> TriPlaneUnprojector (exact) -> VolumeDecoder

Choices (ProAV-DiT publishes no code; each is ours):

- Encoder/decoder are the convolutional :class:`VolumeEncoder`/:class:`VolumeDecoder`; the
  encoder outputs ``hidden_channels`` features, which are projected to planes and fused at
  that width. Time is kept at full rate by default (patch ``(1, ., .)``): one latent row per
  video frame keeps events frame-accurate.
- The fusion stage (:class:`PlaneFusion`) runs on the encoder side only; the decoder sees the
  fused latent. Stages are switchable by ``stages`` for ablations.
- Bottleneck: a KL-regularised diagonal Gaussian per plane (a 1x1 conv to mean and
  log-variance, log-variance clamped to [-30, 20]); ``encode`` returns the mean, training
  samples it. Bounded latents (PVDM's tanh) were the alternative; the Gaussian gives the
  diffusion stage a latent whose scale is set by the KL weight rather than by saturation.
- Latent scale: ``encode`` returns latents multiplied by one stored factor per modality
  (buffer ``latent_scale``, saved with the weights) and ``decode`` divides by it.
  :meth:`MDSA.calibrate_scale` sets it to 1/std of the latents of a batch of data, so the
  diffusion stage sees unit-variance latents.
- Decoding broadcasts the planes back with the exact (ANOVA) unprojector, so planes that came
  from one volume give back its plane-separable part; the decoder adds what is not.
"""

from dataclasses import dataclass, field
from typing import Annotated

import torch
from torch import nn

from avblocks.config_rules import at_least
from avblocks.latent.fusion import STAGES, PlaneFusion
from avblocks.latent.losses import kl_divergence
from avblocks.latent.planes import PLANES
from avblocks.latent.triplane import TriPlane, TriPlaneProjector, TriPlaneUnprojector
from avblocks.latent.volume import VolumeDecoder, VolumeEncoder
from avblocks.saveload import SaveLoadMixin
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["AVLatent", "MDSA", "MDSAConfig", "Posterior"]



@dataclass
class AVLatent:
    """The latent of one sounding-video clip: a video and an audio :class:`TriPlane`."""

    video: TriPlane
    audio: TriPlane

    def planes(self) -> list[Tensor]:
        """The six planes in :data:`~avblocks.latent.planes.PLANE_ORDER`."""
        return [*self.video, *self.audio]

    @classmethod
    def from_planes(cls, planes: list[Tensor]) -> "AVLatent":
        if len(planes) != 6:
            raise ValueError(f"an AVLatent has 6 planes, got {len(planes)}")
        return cls(TriPlane(*planes[:3]), TriPlane(*planes[3:]))

    def num_tokens(self) -> int:
        return self.video.num_tokens + self.audio.num_tokens


@dataclass
class Posterior:
    """Diagonal Gaussians over the six latent planes (unscaled)."""

    mean: AVLatent
    logvar: AVLatent

    def sample(self, generator: torch.Generator | None = None) -> AVLatent:
        noise = [
            torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
            for m in self.mean.planes()
        ]
        planes = [
            m + (0.5 * lv).exp() * n
            for m, lv, n in zip(self.mean.planes(), self.logvar.planes(), noise, strict=True)
        ]
        return AVLatent.from_planes(planes)

    def kl(self) -> Tensor:
        """KL to N(0, I), summed over every latent value, averaged over the batch."""
        return sum(kl_divergence(m, lv) for m, lv in zip(self.mean.planes(), self.logvar.planes(), strict=True))


@dataclass
class MDSAConfig:
    video_patch: Annotated[tuple[int, int, int], at_least(1)] = (1, 4, 4)
    audio_patch: Annotated[tuple[int, int, int], at_least(1)] = (1, 4, 2)
    hidden_channels: Annotated[int, at_least(1)] = 64
    latent_channels: Annotated[int, at_least(1)] = 8
    depth: Annotated[int, at_least(1)] = 2
    heads: Annotated[int, at_least(1)] = 4
    scales: Annotated[tuple[int, ...], at_least(1)] = (1, 2, 4)
    groups: Annotated[int, at_least(1)] = 4
    block_frames: Annotated[int, at_least(1)] = 2
    halo: Annotated[int, at_least(0)] = 0
    pooling: str = "mean"
    stages: tuple[str, ...] = field(default_factory=lambda: STAGES)


class _Stream(nn.Module):
    """One modality's encoder, projector, bottleneck and decoder."""

    def __init__(self, *, channels: int, patch, hidden: int, latent: int, depth: int, pooling: str, axes):
        super().__init__()
        self.encoder = VolumeEncoder(in_channels=channels, latent_channels=hidden, hidden_channels=hidden,
                                     patch=patch, depth=depth, axis_names=axes)
        self.projector = TriPlaneProjector(channels=hidden, pooling=pooling)
        self.to_moments = nn.ModuleDict({p: nn.Conv2d(hidden, 2 * latent, 1) for p in PLANES})
        self.from_latent = nn.ModuleDict({p: nn.Conv2d(latent, hidden, 1) for p in PLANES})
        self.unprojector = TriPlaneUnprojector(combine="exact")
        self.decoder = VolumeDecoder(out_channels=channels, latent_channels=hidden, hidden_channels=hidden,
                                     patch=patch, depth=depth)

    def moments(self, planes: TriPlane) -> tuple[TriPlane, TriPlane]:
        mean, logvar = zip(*(self.to_moments[p](x).chunk(2, dim=1) for p, x in zip(PLANES, planes, strict=True)),
                           strict=True)
        return TriPlane(*mean), TriPlane(*(lv.clamp(-30.0, 20.0) for lv in logvar))

    def decode(self, latent: TriPlane) -> Tensor:
        hidden = TriPlane(*(self.from_latent[p](x) for p, x in zip(PLANES, latent, strict=True)))
        return self.decoder(self.unprojector(hidden))


class MDSA(SaveLoadMixin, nn.Module):
    """The dual-stream tri-plane autoencoder; see the module docstring for the choices made."""

    config_class = MDSAConfig

    def __init__(
        self,
        *,
        video_patch: tuple[int, int, int] = (1, 4, 4),
        audio_patch: tuple[int, int, int] = (1, 4, 2),
        hidden_channels: int = 64,
        latent_channels: int = 8,
        depth: int = 2,
        heads: int = 4,
        scales: tuple[int, ...] = (1, 2, 4),
        groups: int = 4,
        block_frames: int = 2,
        halo: int = 0,
        pooling: str = "mean",
        stages: tuple[str, ...] = STAGES,
    ):
        super().__init__()
        if video_patch[0] != audio_patch[0]:
            raise ValueError(f"video_patch {video_patch} and audio_patch {audio_patch} must down-sample "
                             "time alike, so both latents keep one shared t axis")
        common = dict(hidden=hidden_channels, latent=latent_channels, depth=depth, pooling=pooling)
        self.video = _Stream(channels=3, patch=video_patch, axes=("t", "h", "w"), **common)
        self.audio = _Stream(channels=1, patch=audio_patch, axes=("t", "f", "w"), **common)
        self.fusion = PlaneFusion(dim=hidden_channels, heads=heads, scales=scales, groups=groups,
                                  block_frames=block_frames, halo=halo, stages=stages)
        self.register_buffer("latent_scale", torch.ones(2))  # video, audio

    @shapecheck
    def posterior(self, video: Float[Tensor, "b 3 t h w"], audio: Float[Tensor, "b 1 t f wa"]) -> Posterior:
        """The unscaled Gaussian posterior of the latent of a clip."""
        v_planes = self.video.projector(self.video.encoder(video))
        a_planes = self.audio.projector(self.audio.encoder(audio))
        v_planes, a_planes = self.fusion(v_planes, a_planes)
        (v_mean, v_logvar), (a_mean, a_logvar) = self.video.moments(v_planes), self.audio.moments(a_planes)
        return Posterior(mean=AVLatent(v_mean, a_mean), logvar=AVLatent(v_logvar, a_logvar))

    def scale(self, latent: AVLatent, inverse: bool = False) -> AVLatent:
        sv, sa = (1 / self.latent_scale) if inverse else self.latent_scale
        return AVLatent(latent.video.map(lambda x: x * sv), latent.audio.map(lambda x: x * sa))

    def encode(self, video: Float[Tensor, "b 3 t h w"], audio: Float[Tensor, "b 1 t f wa"]) -> AVLatent:
        """The posterior mean, scaled to (about) unit variance for the diffusion stage."""
        return self.scale(self.posterior(video, audio).mean)

    def decode(self, latent: AVLatent) -> tuple[Tensor, Tensor]:
        """Scaled latent -> ``(video b 3 t h w, audio frames b 1 t f w)``."""
        unscaled = self.scale(latent, inverse=True)
        return self.video.decode(unscaled.video), self.audio.decode(unscaled.audio)

    def forward(
        self, video: Float[Tensor, "b 3 t h w"], audio: Float[Tensor, "b 1 t f wa"],
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Posterior]:
        """Reconstruct a clip through a sampled latent (training); returns the posterior too."""
        posterior = self.posterior(video, audio)
        latent = posterior.sample(generator) if self.training else posterior.mean
        return self.video.decode(latent.video), self.audio.decode(latent.audio), posterior

    @torch.no_grad()
    def calibrate_scale(self, video: Tensor, audio: Tensor) -> tuple[float, float]:
        """Set ``latent_scale`` to 1/std of this batch's posterior means, per modality."""
        mean = self.posterior(video, audio).mean
        stds = [torch.cat([p.flatten() for p in planes]).std() for planes in (mean.video, mean.audio)]
        self.latent_scale.copy_(torch.stack([1 / s.clamp(min=1e-6) for s in stds]))
        return tuple(self.latent_scale.tolist())
