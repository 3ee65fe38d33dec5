"""Volume encoder/decoder: exact sizes, clear size errors, identity-init blocks, overfitting."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import given
from hypothesis import strategies as st

from avblocks.latent.volume import (
    FactorisedResBlock3d,
    VolumeDecoder,
    VolumeEncoder,
)


def _pair(*, channels=3, latent=4, hidden=8, patch=(1, 2, 2), depth=1, groups=4, axes=("t", "h", "w")):
    enc = VolumeEncoder(
        in_channels=channels, latent_channels=latent, hidden_channels=hidden, patch=patch,
        depth=depth, groups=groups, axis_names=axes,
    )
    dec = VolumeDecoder(
        out_channels=channels, latent_channels=latent, hidden_channels=hidden, patch=patch,
        depth=depth, groups=groups,
    )
    return enc, dec


patches = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4))


@given(patches, st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       st.sampled_from([1, 3]))
def test_shapes_round_trip_for_multiples_of_the_patch(patch, mult, channels):
    enc, dec = _pair(channels=channels, patch=patch)
    t, h, w = (p * m for p, m in zip(patch, mult, strict=True))
    x = torch.randn(2, channels, t, h, w)
    z = enc(x)
    assert z.shape == (2, 4, *mult)
    assert enc.latent_size(t, h, w) == tuple(mult)
    assert dec(z).shape == x.shape


@pytest.mark.parametrize(
    ("shape", "patch", "latent"),
    [
        ((1, 3, 16, 32, 32), (1, 4, 4), (16, 8, 8)),  # video, square
        ((1, 3, 16, 24, 40), (2, 4, 8), (8, 6, 5)),  # video, non-square, time halved
        ((2, 1, 16, 64, 8), (1, 8, 2), (16, 8, 4)),  # video-like audio: f=64 mels, w=8 columns
    ],
)
def test_named_shapes(shape, patch, latent):
    enc, dec = _pair(channels=shape[1], patch=patch)
    z = enc(torch.randn(shape))
    assert tuple(z.shape[2:]) == latent
    assert dec(z).shape == shape


def test_bad_size_error_names_axis_size_and_patch():
    enc, _ = _pair(channels=1, patch=(2, 4, 4), axes=("t", "f", "w"))
    with pytest.raises(ValueError, match=r"axis f has size 30, .* its patch 4"):
        enc(torch.randn(1, 1, 4, 30, 8))
    with pytest.raises(ValueError, match=r"axis t has size 3, .* its patch 2"):
        enc(torch.randn(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"axis w has size 2, .* its patch 4"):
        enc.latent_size(2, 4, 2)
    with pytest.raises(ValueError, match="input has 3 channels, encoder expects 1"):
        enc(torch.randn(1, 3, 2, 4, 4))


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match=r"groups \(3\) must divide hidden_channels \(8\)"):
        VolumeEncoder(hidden_channels=8, groups=3)
    with pytest.raises(ValueError, match=r"patch \(\(1, 0, 4\)\)"):
        VolumeDecoder(patch=(1, 0, 4))
    with pytest.raises(ValueError, match=r"depth \(-1\)"):
        VolumeEncoder(depth=-1)
    _, dec = _pair(latent=4)
    with pytest.raises(ValueError, match="latent has 5 channels, decoder expects 4"):
        dec(torch.randn(1, 5, 1, 2, 2))


def test_residual_block_is_identity_at_init():
    block = FactorisedResBlock3d(channels=8, groups=2)
    x = torch.randn(2, 8, 3, 5, 4)
    torch.testing.assert_close(block(x), x, atol=0, rtol=0)


def test_decoder_unpatch_matches_conv_transpose():
    # The pixel-shuffle un-patch is a ConvTranspose3d with kernel = stride = patch.
    _, dec = _pair(channels=2, patch=(2, 3, 2), depth=0)
    z = torch.randn(1, 4, 2, 2, 3)
    conv = dec.out[-1]
    feats = dec.out[:-1](dec.inp(z))
    tconv = torch.nn.ConvTranspose3d(8, 2, kernel_size=(2, 3, 2), stride=(2, 3, 2))
    with torch.no_grad():  # weight: (in, out, kt, kh, kw) from conv's (out*kt*kh*kw, in, 1, 1, 1)
        tconv.weight.copy_(rearrange(conv.weight[..., 0, 0, 0], "(c a b d) i -> i c a b d",
                                     c=2, a=2, b=3, d=2))
        tconv.bias.zero_()
    bias = rearrange(conv.bias, "(c a b d) -> c a b d", c=2, a=2, b=3, d=2)
    ref = tconv(feats) + bias.repeat(1, 2, 2, 3)[None]
    torch.testing.assert_close(dec(z), ref, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    enc, dec = _pair(channels=1, patch=(1, 4, 2), axes=("t", "f", "w"))
    enc.save_pretrained(tmp_path / "enc")
    dec.save_pretrained(tmp_path / "dec")
    enc2 = VolumeEncoder.from_pretrained(tmp_path / "enc")
    dec2 = VolumeDecoder.from_pretrained(tmp_path / "dec")
    assert enc2.config == enc.config and enc2.config.axis_names == ("t", "f", "w")
    x = torch.randn(1, 1, 2, 8, 4)
    torch.testing.assert_close(dec2(enc2(x)), dec(enc(x)), atol=0, rtol=0)


def test_tiny_pair_overfits_one_clip():
    torch.manual_seed(0)
    enc, dec = _pair(channels=3, latent=8, hidden=16, patch=(1, 4, 4), depth=1, groups=4)
    t = torch.linspace(0, 1, 4)[:, None, None]
    h = torch.linspace(0, 1, 16)[:, None]
    w = torch.linspace(0, 1, 16)
    clip = torch.stack([
        torch.sin(2 * math.pi * (h + w + t)),
        torch.cos(2 * math.pi * (2 * h - t)) + 0 * w,
        torch.sin(3 * math.pi * w) * torch.cos(math.pi * h) + 0 * t,
    ])[None]
    clip = clip + 0.1 * torch.randn_like(clip)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)
    losses = []
    for _ in range(60):
        loss = F.mse_loss(dec(enc(clip)), clip)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # measured: 0.556 -> 0.013 (ratio ~42) on seed 0; 46-49 on seeds 1-3
    assert losses[0] / losses[-1] > 10.0, (losses[0], losses[-1])


def test_encoder_is_time_local():
    # depth 2 -> two (3,1,1) temporal convs: a change at frame k reaches frames k-2..k+2 only
    from avblocks.latent.volume import VolumeEncoder

    enc = VolumeEncoder(in_channels=1, latent_channels=4, hidden_channels=8, patch=(1, 2, 2), depth=2, groups=4)
    with torch.no_grad():
        for p in enc.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn_like(p) * 0.2)
    x = torch.randn(1, 1, 10, 8, 8)
    changed = x.clone()
    changed[:, :, 7] += 1.0
    diff = (enc(changed) - enc(x)).abs().amax(dim=(0, 1, 3, 4))
    assert torch.all(diff[:5] == 0) and torch.all(diff[5:] > 0)


def test_frame_group_norm_equals_group_norm_per_frame():
    from avblocks.latent.volume import FrameGroupNorm

    norm = FrameGroupNorm(2, 4)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 4, 3, 5, 5)
    expected = torch.stack([torch.nn.functional.group_norm(x[:, :, i], 2, norm.weight, norm.bias, norm.eps)
                            for i in range(3)], dim=2)
    torch.testing.assert_close(norm(x), expected)
