"""Losses of the audio-video autoencoder, and the patch discriminators of its adversarial stage.

- :func:`kl_divergence`: KL of the diagonal Gaussian posterior to N(0, I), summed over the
  latent and averaged over the batch (the usual VAE term; weight it small).
- :func:`multiscale_spectral_l1`: the multi-resolution spectral term on (normalised) log-mel
  spectrograms. The decoder outputs mel frames, not a waveform, so instead of a
  multi-resolution STFT loss on audio we compare the spectrogram at several time-frequency
  resolutions: L1 after ``2^k x 2^k`` average pooling for ``k = 0..levels-1``. Coarse levels
  weigh the envelope (onsets, spectral tilt) that per-bin L1 under-rewards for blurry outputs.
- :class:`PatchDiscriminator2d` (per frame) and :class:`PatchDiscriminator3d` (spatio-temporal),
  PatchGAN-style strided convolutions with GroupNorm and LeakyReLU, returning a logit map;
  :func:`hinge_d_loss` / :func:`hinge_g_loss` are the hinge objectives.
"""

import torch.nn.functional as F
from einops import rearrange
from torch import nn

from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "kl_divergence",
    "multiscale_spectral_l1",
    "hinge_d_loss",
    "hinge_g_loss",
    "PatchDiscriminator2d",
    "PatchDiscriminator3d",
]


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), summed over all but the batch axis, batch-averaged."""
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean()


@shapecheck
def multiscale_spectral_l1(
    pred: Float[Tensor, "b c f n"], target: Float[Tensor, "b c f n"], *, levels: int = 3
) -> Tensor:
    """Mean over ``levels`` of the L1 distance after ``2^k x 2^k`` average pooling."""
    if levels < 1:
        raise ValueError(f"levels ({levels}) must be at least 1")
    total = pred.new_zeros(())
    for k in range(levels):
        size = 2**k
        if min(pred.shape[-2:]) < size:
            raise ValueError(f"spectrogram {tuple(pred.shape[-2:])} too small for level {k} "
                             f"(pool {size}); use levels <= {k}")
        total = total + F.l1_loss(F.avg_pool2d(pred, size), F.avg_pool2d(target, size))
    return total / levels


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's hinge loss: ``mean(relu(1 - real)) + mean(relu(1 + fake))``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """The generator's hinge loss: ``-mean(fake)``."""
    return -fake_logits.mean()


def _stack(conv, norm_groups: int, channels: int, widths: tuple[int, ...], stride) -> nn.Sequential:
    layers: list[nn.Module] = []
    previous = channels
    for i, width in enumerate(widths):
        layers.append(conv(previous, width, kernel_size=3, stride=stride, padding=1))
        if i > 0:
            layers.append(nn.GroupNorm(min(norm_groups, width), width))
        layers.append(nn.LeakyReLU(0.2))
        previous = width
    layers.append(conv(previous, 1, kernel_size=3, padding=1))
    return nn.Sequential(*layers)


class PatchDiscriminator2d(nn.Module):
    """Per-frame PatchGAN on ``b c t h w``: frames are judged one at a time (appearance)."""

    def __init__(self, *, channels: int = 3, widths: tuple[int, ...] = (32, 64, 128), norm_groups: int = 8):
        super().__init__()
        self.net = _stack(nn.Conv2d, norm_groups, channels, widths, stride=2)

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b t hp wp"]:
        logits = self.net(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(logits, "(b t) 1 h w -> b t h w", b=x.shape[0])


class PatchDiscriminator3d(nn.Module):
    """Spatio-temporal PatchGAN on ``b c t h w`` (motion); time is strided once less than space."""

    def __init__(self, *, channels: int = 3, widths: tuple[int, ...] = (32, 64, 128), norm_groups: int = 8):
        super().__init__()
        self.net = _stack(nn.Conv3d, norm_groups, channels, widths, stride=(1, 2, 2))

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b tp hp wp"]:
        return self.net(x).squeeze(1)
