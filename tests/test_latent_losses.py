"""Autoencoder losses against their formulas; discriminators shape and learnability."""

import math

import pytest
import torch
import torch.nn.functional as F

from avblocks.latent.losses import (
    PatchDiscriminator2d,
    PatchDiscriminator3d,
    hinge_d_loss,
    hinge_g_loss,
    kl_divergence,
    multiscale_spectral_l1,
)


def test_kl_matches_closed_form_of_one_gaussian():
    mean = torch.full((2, 3), 0.5)
    logvar = torch.full((2, 3), math.log(2.0))
    per_dim = 0.5 * (0.25 + 2.0 - 1.0 - math.log(2.0))
    assert kl_divergence(mean, logvar).item() == pytest.approx(3 * per_dim)
    assert kl_divergence(torch.zeros(4, 5), torch.zeros(4, 5)).item() == 0.0


def test_multiscale_l1_levels():
    pred, target = torch.randn(2, 1, 16, 32), torch.randn(2, 1, 16, 32)
    assert multiscale_spectral_l1(pred, target, levels=1) == pytest.approx(F.l1_loss(pred, target).item())
    expected = sum(F.l1_loss(F.avg_pool2d(pred, s), F.avg_pool2d(target, s)) for s in (1, 2, 4)) / 3
    assert multiscale_spectral_l1(pred, target, levels=3).item() == pytest.approx(expected.item())
    # a constant offset costs the same at every level; noise costs less once pooled
    assert multiscale_spectral_l1(target + 1, target, levels=3).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="too small"):
        multiscale_spectral_l1(pred[..., :3, :], target[..., :3, :], levels=3)


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)


@pytest.mark.parametrize("cls, shape", [(PatchDiscriminator2d, (2, 4, 4, 4)), (PatchDiscriminator3d, (2, 4, 4, 4))])
def test_discriminators_give_patch_logits_and_can_separate(cls, shape):
    disc = cls(channels=3, widths=(8, 16), norm_groups=4)
    real = torch.rand(2, 3, 4, 16, 16) * 0.2 + 0.5  # bright, smooth
    fake = torch.randn(2, 3, 4, 16, 16) * 0.5  # noise
    assert disc(real).shape == shape
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    for _ in range(30):
        loss = hinge_d_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert disc(real).mean() > 0.5 and disc(fake).mean() < -0.5
