"""The per-frame KL image autoencoder: shapes, the KL against plain math, per-frame locality,
save/load, and errors that name the bad value."""

import math

import pytest
import torch

from avblocks.latent.image_autoencoder import DiagonalGaussian, ImageAutoencoder


def tiny(**overrides) -> ImageAutoencoder:
    kwargs = dict(in_channels=3, latent_channels=4, hidden_channels=8, downsample=4, depth=1, groups=2)
    return ImageAutoencoder(**{**kwargs, **overrides})


def test_shapes_of_images_and_frames():
    ae = tiny()
    post = ae.encode(torch.randn(2, 3, 16, 24))
    assert post.mean.shape == post.logvar.shape == (2, 4, 4, 6)
    assert ae.decode(post.sample()).shape == (2, 3, 16, 24)
    frames = ae.encode_frames(torch.randn(2, 3, 5, 16, 16))
    assert frames.mean.shape == (2, 4, 5, 4, 4)
    assert ae.decode_frames(frames.mode(), chunk=3).shape == (2, 3, 5, 16, 16)


def test_kl_matches_the_closed_form_written_out():
    mean, logvar = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    expected = 0.0
    for i in range(3):  # per sample: sum over values of KL(N(m, s^2) || N(0, 1)), then batch mean
        for m, lv in zip(mean[i].flatten().tolist(), logvar[i].flatten().tolist(), strict=True):
            var = math.exp(lv)
            expected += 0.5 * (m * m + var - 1.0 - math.log(var)) / 3
    assert DiagonalGaussian(mean, logvar).kl().item() == pytest.approx(expected, rel=1e-5)
    assert DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3)).kl().item() == 0.0


def test_sample_has_the_posterior_statistics():
    post = DiagonalGaussian(torch.full((1, 200_000), 1.5), torch.full((1, 200_000), math.log(0.25)))
    s = post.sample(torch.Generator().manual_seed(0))
    assert s.mean().item() == pytest.approx(1.5, abs=0.01)
    assert s.std().item() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(post.mode(), post.mean)


def test_frames_are_coded_independently_and_chunking_changes_nothing():
    ae = tiny()
    for p in ae.parameters():  # break the zero-init so every layer acts
        p.data.add_(0.1 * torch.randn_like(p))
    video = torch.randn(1, 3, 4, 8, 8)
    changed = video.clone()
    changed[:, :, 2] += 1.0
    a, b = ae.encode_frames(video).mean, ae.encode_frames(changed).mean
    assert torch.equal(a[:, :, [0, 1, 3]], b[:, :, [0, 1, 3]])
    assert not torch.allclose(a[:, :, 2], b[:, :, 2])
    torch.testing.assert_close(ae.decode_frames(a, chunk=1), ae.decode_frames(a, chunk=16))


def test_latent_scale_round_trip_and_save_load(tmp_path):
    ae = tiny()
    video = torch.randn(2, 3, 3, 8, 8)
    scale = ae.calibrate_scale(video)
    assert scale == pytest.approx(1 / ae.encode_frames(video).mean.std().item(), rel=1e-5)
    assert ae.latents(video).std().item() == pytest.approx(1.0, rel=1e-4)
    ae.save_pretrained(tmp_path / "ae")
    loaded = ImageAutoencoder.from_pretrained(tmp_path / "ae")
    assert loaded.config == ae.config and loaded.latent_scale.item() == ae.latent_scale.item()
    z = ae.latents(video)
    assert torch.equal(loaded.latents(video), z)
    assert torch.equal(loaded.images(z), ae.images(z))


def test_bad_inputs_name_the_value():
    ae = tiny()
    with pytest.raises(ValueError, match="axis w has size 10.*downsample 4"):
        ae.encode(torch.randn(1, 3, 8, 10))
    with pytest.raises(ValueError, match="1 channels.*expects 3"):
        ae.encode(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="5 channels.*expects 4"):
        ae.decode(torch.randn(1, 5, 2, 2))
    with pytest.raises(ValueError, match=r"downsample \(0\)"):
        tiny(downsample=0)
    with pytest.raises(ValueError, match="differ in shape"):
        DiagonalGaussian(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"chunk \(0\)"):
        ae.decode_frames(torch.randn(1, 4, 2, 2, 2), chunk=0)


def test_a_local_diffusers_autoencoder_has_the_same_interface(tmp_path):
    diffusers = pytest.importorskip("diffusers")  # optional: only where diffusers is installed
    from avblocks.latent.image_autoencoder import DiffusersImageAutoencoder

    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                  norm_num_groups=4, sample_size=16)
    vae.save_pretrained(tmp_path / "vae")
    ae = DiffusersImageAutoencoder(tmp_path / "vae")
    assert ae.downsample == 2 and ae.latent_scale.item() == pytest.approx(vae.config.scaling_factor)
    video = torch.randn(1, 3, 2, 16, 16)
    z = ae.latents(video)
    assert z.shape == (1, 4, 2, 8, 8)
    torch.testing.assert_close(z[:, :, 0], vae.encode(video[:, :, 0]).latent_dist.mean * ae.latent_scale)
    assert ae.images(z).shape == video.shape
    with pytest.raises(FileNotFoundError, match="no AutoencoderKL folder"):
        DiffusersImageAutoencoder(tmp_path / "missing")
