"""The dual-stream DiT, its sampler packing and its per-stream step cache.

Model: token times, identity at init, the clean-estimate output, streams independent without
a coupling and joined with one, per-stream times, save / load, errors. Packing: round trip and
held-clean streams through the library's samplers. Cache: thresholds of 0 are the uncached
output bit for bit, each stream decides alone, a reused coupling adds exactly its cached
increments.
"""

from fractions import Fraction

import pytest
import torch

from avblocks.coupling import CouplingConfig
from avblocks.diffusion import ClassifierFreeGuidance, FlowEulerSampler, FlowHeunSampler
from avblocks.diffusion.stream_pack import PackedDenoiser, StreamPack
from avblocks.dit.dual_stream import (
    AudioStreamConfig,
    DualStreamDiT,
    VideoStreamConfig,
    stream_times,
)
from avblocks.dit.stream_cache import StreamCache

B = 2


def tiny(kind: str = "cross", **overrides) -> DualStreamDiT:
    return DualStreamDiT(**{"video": VideoStreamConfig(size=(8, 8), patch=4, width=16),
                            "audio": AudioStreamConfig(mel_bins=8, frame_columns=4, patch=2, width=8),
                            "frames": 4, "depth": 2, "num_heads": 2, "num_classes": 3,
                            "coupling": CouplingConfig(kind=kind, heads=2, groups=2, shift_window=2),
                            **overrides})


def perturbed(model: DualStreamDiT, seed: int = 0) -> DualStreamDiT:
    """Every zero-initialised part (adaLN, gates, final layers) gets random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 3, 4, 8, 8, generator=g), torch.randn(B, 1, 4, 8, 4, generator=g),
            torch.rand(B, generator=g), torch.rand(B, generator=g), torch.tensor([0, 2]))


def test_token_times_meet_by_seconds_across_rates():
    video, audio = stream_times(3, Fraction(30000, 1001), 2, 5)
    assert video.tolist() == pytest.approx([float((k + Fraction(1, 2)) * Fraction(1001, 30000))
                                           for k in (0, 0, 1, 1, 2, 2)])
    # the audio tokens of frame k are centred on the video frame's time
    frame_means = audio.view(3, 5).mean(dim=1)
    torch.testing.assert_close(frame_means, video[::2])
    model = tiny()
    assert model.video_time.shape == (4 * 4,) and model.audio_time.shape == (4 * 2,)


def test_a_fresh_model_predicts_zero_and_returns_the_velocity_of_that():
    model = tiny().eval()
    video, audio, tv, ta, y = inputs()
    clean_v, clean_a = model.predict_clean(video, audio, tv, ta, y)
    assert torch.equal(clean_v, torch.zeros_like(video)) and torch.equal(clean_a, torch.zeros_like(audio))
    v_video, v_audio = model(video, audio, tv, ta, y)
    torch.testing.assert_close(v_video, video / tv.clamp_min(0.05).view(-1, 1, 1, 1, 1))
    torch.testing.assert_close(v_audio, audio / ta.clamp_min(0.05).view(-1, 1, 1, 1, 1))
    for block in model.blocks:  # every block, streams and coupling, starts as the identity
        v, a = torch.randn(B, 16, 16), torch.randn(B, 8, 8)
        out = block(v, a, torch.randn(B, 16), torch.randn(B, 8), model.video_time, model.audio_time, model.rotary)
        assert torch.equal(out[0], v) and torch.equal(out[1], a)


@pytest.mark.parametrize("kind", ["none", "cross", "joint", "resample", "gcm", "biblock", "random_shift"])
def test_streams_meet_only_through_the_coupling(kind):
    model = perturbed(tiny(kind))
    video, audio, tv, ta, y = inputs()
    other = audio + torch.randn_like(audio)
    with torch.no_grad():
        a = model.predict_clean(video, audio, tv, ta, y)[0]
        b = model.predict_clean(video, other, tv, ta, y)[0]
    assert torch.equal(a, b) == (kind == "none")


def test_each_stream_is_conditioned_on_its_own_time():
    model = perturbed(tiny("none"))
    video, audio, tv, ta, y = inputs()
    with torch.no_grad():
        base = model.predict_clean(video, audio, tv, ta, y)
        later_audio = model.predict_clean(video, audio, tv, ta + 0.3, y)
    assert torch.equal(base[0], later_audio[0]) and not torch.equal(base[1], later_audio[1])


def test_coupling_every_k_blocks_and_save_load(tmp_path):
    model = perturbed(tiny(depth=3, coupling=CouplingConfig(kind="cross", every=2, heads=2)))
    assert [b.coupling is not None for b in model.blocks] == [False, True, False]
    model.save_pretrained(tmp_path)
    loaded = DualStreamDiT.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config and loaded.fps == Fraction(8)
    video, audio, tv, ta, y = inputs()
    with torch.no_grad():
        for a, b in zip(model(video, audio, tv, ta, y), loaded(video, audio, tv, ta, y)):
            assert torch.equal(a, b)


def test_bad_configs_and_inputs_name_the_values():
    with pytest.raises(ValueError, match=r"audio.frame_columns \(4\) must be divisible by audio.patch \(3\)"):
        DualStreamDiT(audio=AudioStreamConfig(frame_columns=4, patch=3))
    with pytest.raises(ValueError, match=r"video.size \(8, 8\) must be divisible by video.patch \(3\)"):
        DualStreamDiT(video=VideoStreamConfig(size=(8, 8), patch=3))
    with pytest.raises(ValueError, match="class_dropout"):
        tiny(class_dropout=0.0)
    model = tiny()
    video, audio, tv, ta, y = inputs()
    with pytest.raises(ValueError, match=r"labels \[0, 7\] out of range"):
        model(video, audio, tv, ta, torch.tensor([0, 7]))
    with pytest.raises(Exception, match="t"):  # the streams' frame axes must agree
        model(video, audio[:, :, :3], tv, ta, y)


# ---- packing --------------------------------------------------------------------------------


def test_the_pack_round_trips_and_holds_one_time_per_stream():
    pack = StreamPack((3, 4, 8, 8), (1, 4, 8, 4))
    video, audio = torch.randn(B, 3, 4, 8, 8), torch.randn(B, 1, 4, 8, 4)
    x = pack.pack(video, audio)
    assert x.shape == (B, 768 + 128)
    assert all(torch.equal(a, b) for a, b in zip(pack.unpack(x), (video, audio)))
    t = pack.times(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4]))
    assert [v.tolist() for v in pack.stream_times(t)] == [pytest.approx([0.1, 0.2]), pytest.approx([0.3, 0.4])]
    t[0, 5] = 0.9
    with pytest.raises(ValueError, match="constant over each stream"):
        pack.stream_times(t)
    mask = pack.clean_mask(B, video=False, audio=True)
    assert not mask[:, :768].any() and mask[:, 768:].all()
    with pytest.raises(ValueError, match="do not match the pack"):
        pack.pack(audio, video)


@pytest.mark.parametrize("clean", ["video", "audio"])
def test_a_given_stream_stays_exactly_as_given_through_the_sampler(clean):
    model = perturbed(tiny())
    pack = StreamPack(model.video_shape(), model.audio_shape())
    video, audio, _, _, y = inputs(1)
    fixed = pack.pack(video, audio)
    mask = pack.clean_mask(B, video=clean == "video", audio=clean == "audio")
    noise = torch.randn(B, pack.size)
    out = FlowHeunSampler(frame_dim=1).sample(PackedDenoiser(model, pack), noise, 3, clean_mask=mask, fixed=fixed,
                                              model_kwargs={"y": y}, progress=False)
    out_video, out_audio = pack.unpack(out)
    kept, made = (out_video, out_audio) if clean == "video" else (out_audio, out_video)
    assert torch.equal(kept, video if clean == "video" else audio)
    assert not torch.equal(made, (audio if clean == "video" else video))


# ---- the per-stream cache ---------------------------------------------------------------------


def _sample(model, noise, y, mask=None, fixed=None, steps=6):
    pack = StreamPack(model.video_shape(), model.audio_shape())
    guided = ClassifierFreeGuidance(PackedDenoiser(model, pack), scale=2.0, null_label=model.null_label, frame_dim=1)
    return FlowEulerSampler(frame_dim=1).sample(guided, noise, steps, model_kwargs={"y": y}, clean_mask=mask,
                                                fixed=fixed, progress=False)


def test_zero_thresholds_reproduce_the_uncached_sampler_bit_for_bit():
    model = perturbed(tiny("joint"))
    noise, y = torch.randn(B, 896), torch.tensor([0, 1])
    reference = _sample(model, noise, y)
    with StreamCache(model, video_threshold=0.0, audio_threshold=0.0, coupling_threshold=0.0) as cache:
        assert torch.equal(_sample(model, noise, y), reference)
    assert cache.streams["video"].skipped == cache.streams["audio"].skipped == cache.streams["coupling"].skipped == 0
    assert "forward_blocks" not in vars(model)  # detached: the model has its own method back


def test_each_stream_decides_alone():
    """Audio-to-video: the audio never moves, so its stream is skipped while the video runs."""
    model = perturbed(tiny("cross"))
    pack = StreamPack(model.video_shape(), model.audio_shape())
    video, audio, _, _, y = inputs(2)
    fixed, mask = pack.pack(video, audio), pack.clean_mask(B, video=False, audio=True)
    noise = torch.randn(B, pack.size)
    reference = _sample(model, noise, y, mask, fixed)
    with StreamCache(model, video_threshold=0.0, audio_threshold=0.01) as cache:
        approx = _sample(model, noise, y, mask, fixed)
    audio_stats, video_stats = cache.streams["audio"], cache.streams["video"]
    assert audio_stats.computed == 1 and audio_stats.skipped == 5  # only the warm-up call ran it
    assert video_stats.skipped == 0 and video_stats.computed == 6
    assert all(c == 0 for c in audio_stats.changes[1:])  # the clean audio's input never changed
    assert not torch.equal(approx, reference)  # the audio stream's coupling inputs are last call's
    torch.testing.assert_close(pack.unpack(approx)[1], pack.unpack(reference)[1])  # audio held clean
    assert float((approx - reference).abs().max()) < 0.5


def test_a_reused_coupling_adds_exactly_its_cached_increments():
    model = perturbed(tiny("cross"))
    video, audio = torch.randn(B, 16, 16), torch.randn(B, 8, 8)
    cv, ca = torch.randn(B, 16), torch.randn(B, 8)
    cache = StreamCache(model, video_threshold=0.0, audio_threshold=0.0, coupling_threshold=float("inf"))
    with torch.no_grad():
        model.forward_blocks(video, audio, cv, ca)  # warm-up: every coupling runs and is cached
        deltas = [cache._state[f"coupling{i}_delta"] for i in range(2)]
        out = model.forward_blocks(video + 0.1, audio - 0.1, cv, ca)
        v, a = video + 0.1, audio - 0.1  # by hand: stream blocks, then the cached increments
        for block, delta in zip(model.blocks, deltas):
            v, a = block.streams(v, a, cv, ca, model.video_time, model.audio_time, model.rotary)
            v, a = v + delta["video"], a + delta["audio"]
    cache.detach()
    assert cache.streams["coupling"].computed == 2 and cache.streams["coupling"].skipped == 2
    assert torch.equal(out[0], v) and torch.equal(out[1], a)


def test_the_cache_steps_aside_for_gradients_and_refuses_other_models():
    model = perturbed(tiny("cross"))
    with StreamCache(model, video_threshold=1.0, audio_threshold=1.0) as cache:
        video, audio, tv, ta, y = inputs()
        for _ in range(2):
            model(video.requires_grad_(), audio, tv, ta, y)[0].sum().backward()
    assert cache.stats.calls == 0
    from avblocks.dit.stdit import STDiT

    with pytest.raises(ValueError, match="not a two-stream model"):
        StreamCache(STDiT(side=8, depth=1, hidden_size=32, num_heads=2), video_threshold=0.1, audio_threshold=0.1)
    with pytest.raises(ValueError, match=r"coupling_threshold \(-1"):
        StreamCache(model, video_threshold=0.1, audio_threshold=0.1, coupling_threshold=-1)
