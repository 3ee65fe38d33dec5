"""READ's long generation in the library (:mod:`avblocks.diffusion.long_generation`): how many
clips a length needs, audio guidance, and the step caches around :class:`ReadDenoiser`."""

import torch

from avblocks.diffusion.long_generation import AudioGuidance, iter_long_generation, num_clips
from avblocks.diffusion.schedules import ReadSchedule
from avblocks.dit.cache import FirstBlockCache, TeaCache
from avblocks.dit.read_denoiser import ReadDenoiser


def perturbed_denoiser(depth: int = 1) -> ReadDenoiser:
    """A tiny denoiser whose zero-initialised gates are opened, so every branch is heard."""
    torch.manual_seed(0)
    model = ReadDenoiser(size=16, frames=3, patch=8, hidden_size=16, depth=depth, num_heads=2,
                         audio_dim=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def test_clip_count_covers_the_video_exactly():
    for motion in (2, 3, 4, 8):
        for frames in range(1, 40):
            covered, clips = motion, 1
            while covered < frames:
                covered, clips = covered + motion - 1, clips + 1
            assert num_clips(frames, motion) == clips


def test_each_clip_yields_only_its_new_frames():
    model = perturbed_denoiser()  # 2 motion frames per clip: 1 new frame per later clip
    codes, reference = torch.randn(1, 5, 4), torch.rand(1, 3, 16, 16) * 2 - 1
    parts = list(iter_long_generation(model, codes, reference, schedule=ReadSchedule(frames=3), steps=2))
    assert [p.shape[2] for p in parts] == [2, 1, 1, 1] == [2] + [1] * (num_clips(5, 2) - 1)


def test_audio_guidance_combines_the_two_branches():
    model = perturbed_denoiser()
    x, t, audio = torch.randn(2, 3, 3, 16, 16), torch.rand(2, 3), torch.randn(2, 2, 4)
    dropped = torch.ones(2, dtype=torch.bool)
    null = model(x, t, audio, dropped)
    assert torch.equal(null, model(x, t, torch.randn(2, 2, 4), dropped))  # audio unheard
    cond = model(x, t, audio)
    guided = AudioGuidance(model, 3.0)(x, t, audio)
    # Both branches run in one doubled batch, whose matmuls round differently from the two
    # single ones by ~1e-6; the scale of 3 multiplies that difference.
    torch.testing.assert_close(guided, null + 3.0 * (cond - null), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_step_caches_wrap_the_denoiser_blocks():
    model = perturbed_denoiser(depth=2)
    x, t, audio = torch.randn(1, 3, 3, 16, 16), torch.rand(1, 3), torch.randn(1, 2, 4)
    plain = model(x, t, audio)
    for kind in (FirstBlockCache, TeaCache):
        with kind(model, threshold=0.0) as cache:
            assert torch.equal(model(x, t, audio), plain)  # the audio reached every block
            assert cache.stats.computed == 1
