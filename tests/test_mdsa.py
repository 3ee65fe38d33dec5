"""The MDSA autoencoder: shapes for any valid size, save/load, scale, and cross-modal locality."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.latent.losses import kl_divergence
from avblocks.latent.mdsa import MDSA, AVLatent

TINY = dict(hidden_channels=16, latent_channels=4, depth=1, heads=2, groups=4, block_frames=2)


def clip(b=2, t=8, h=16, w=16, f=16, wa=4):
    return torch.randn(b, 3, t, h, w), torch.randn(b, 1, t, f, wa)


def perturb_zero_init(model: torch.nn.Module, scale: float = 0.2) -> None:
    """Give the zero-initialised residual branches weights, so locality tests can fail."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


@given(t=st.sampled_from([4, 8, 12]), h=st.sampled_from([8, 16]), w=st.sampled_from([8, 12]),
       f=st.sampled_from([8, 16]), wa=st.sampled_from([2, 4]))
def test_reconstruction_has_input_shape_and_planes_have_documented_sizes(t, h, w, f, wa):
    model = MDSA(**TINY).eval()
    video, audio = clip(1, t, h, w, f, wa)
    rec_video, rec_audio, posterior = model(video, audio)
    assert rec_video.shape == video.shape and rec_audio.shape == audio.shape
    shapes = [tuple(p.shape[2:]) for p in posterior.mean.planes()]
    assert shapes == [(h // 4, w // 4), (t, h // 4), (t, w // 4), (f // 4, wa // 2), (t, f // 4), (t, wa // 2)]


def test_bad_sizes_are_named():
    model = MDSA(**TINY)
    video, audio = clip(h=18)
    with pytest.raises(ValueError, match="axis h has size 18"):
        model(video, audio)
    with pytest.raises(ValueError, match=r"t \(6\)"):
        model(*clip(t=6))  # the temporal scales and groups (4) must divide t
    with pytest.raises(ValueError, match="down-sample time alike"):
        MDSA(video_patch=(2, 4, 4), audio_patch=(1, 4, 2))
    with pytest.raises(ValueError, match="unknown fusion stages"):
        MDSA(stages=("gcm", "fancy"))


def test_save_load_round_trip_keeps_weights_and_scale(tmp_path):
    model = MDSA(**TINY).eval()
    video, audio = clip()
    model.calibrate_scale(video, audio)
    model.save_pretrained(tmp_path)
    loaded = MDSA.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.latent_scale, model.latent_scale)
    for a, b in zip(model.encode(video, audio).planes(), loaded.encode(video, audio).planes(), strict=True):
        assert torch.equal(a, b)


def test_scale_gives_unit_variance_and_decode_inverts_it():
    model = MDSA(**TINY).eval()
    video, audio = clip(b=4)
    model.calibrate_scale(video, audio)
    latent = model.encode(video, audio)
    for planes in (latent.video, latent.audio):
        assert torch.cat([p.flatten() for p in planes]).std().item() == pytest.approx(1.0, rel=1e-4)
    decoded_video, decoded_audio = model.decode(latent)
    rec_video, rec_audio, _ = model(video, audio)  # eval: through the unscaled mean
    torch.testing.assert_close(decoded_video, rec_video, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(decoded_audio, rec_audio, rtol=1e-4, atol=1e-5)


def test_kl_matches_the_formula_and_sampling_uses_the_variance():
    model = MDSA(**TINY).train()
    posterior = model.posterior(*clip())
    expected = sum(kl_divergence(m, lv) for m, lv in zip(posterior.mean.planes(), posterior.logvar.planes(), strict=True))
    assert posterior.kl().item() == pytest.approx(expected.item(), rel=1e-5)
    a = posterior.sample(torch.Generator().manual_seed(0))
    b = posterior.sample(torch.Generator().manual_seed(0))
    c = posterior.sample(torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a.planes(), b.planes(), strict=True))
    assert not torch.equal(a.planes()[0], c.planes()[0])


def test_at_init_fusion_is_identity_so_video_latent_ignores_audio():
    model = MDSA(**TINY).eval()
    video, audio = clip()
    before = model.posterior(video, audio).mean.video
    after = model.posterior(video, torch.randn_like(audio)).mean.video
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))


@pytest.mark.parametrize("group", [0, 1, 2, 3])
def test_grouped_fusion_keeps_audio_of_other_groups_out_of_a_video_group(group):
    # Only GCM fuses; the audio encoder's temporal convs (depth 1) spread a change by one frame,
    # so audio is changed only in frames at least 2 away from the group under test.
    model = MDSA(**{**TINY, "stages": ("gcm",)}).eval()
    perturb_zero_init(model)
    t, size = 16, 4  # 4 groups of 4 frames
    video, audio = clip(b=1, t=t)
    lo, hi = group * size, (group + 1) * size
    far = [k for k in range(t) if k < lo - 1 or k >= hi + 1]
    changed = audio.clone()
    changed[:, :, far] += torch.randn_like(changed[:, :, far])
    base = model.posterior(video, audio).mean.video
    moved = model.posterior(video, changed).mean.video
    torch.testing.assert_close(moved.th[:, :, lo:hi], base.th[:, :, lo:hi], rtol=0, atol=1e-6)
    torch.testing.assert_close(moved.tw[:, :, lo:hi], base.tw[:, :, lo:hi], rtol=0, atol=1e-6)
    torch.testing.assert_close(moved.hw, base.hw, rtol=0, atol=1e-6)  # hw takes no part in fusion
    # positive control: audio inside the group does reach the group's video planes
    inside = audio.clone()
    inside[:, :, lo:hi] += 1.0
    assert not torch.allclose(model.posterior(video, inside).mean.video.th[:, :, lo:hi],
                              base.th[:, :, lo:hi], atol=1e-4)


def test_av_latent_plane_order_round_trip():
    model = MDSA(**TINY).eval()
    latent = model.encode(*clip())
    again = AVLatent.from_planes(latent.planes())
    assert all(a is b for a, b in zip(again.planes(), latent.planes(), strict=True))
    with pytest.raises(ValueError, match="6 planes"):
        AVLatent.from_planes(latent.planes()[:5])


def test_tiny_model_learns_to_reconstruct_one_clip():
    torch.manual_seed(0)
    model = MDSA(**TINY)
    video = torch.zeros(1, 3, 8, 16, 16)
    video[:, :, :, 4:8, 6:10] = 1.0  # a bright square
    audio = torch.linspace(-1, 1, 16).view(1, 1, 1, 16, 1).expand(1, 1, 8, 16, 4).contiguous()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        rec_v, rec_a, posterior = model(video, audio)
        loss = (rec_v - video).abs().mean() + (rec_a - audio).abs().mean() + 1e-6 * posterior.kl()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
