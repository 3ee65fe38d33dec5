"""Every coupling behind the one interface: identity at init (with a gradient), equal to its
plain-math reference, invariant to shifting both streams' times, local within its documented
window, the same under every attention backend, and clear errors.

Streams: 4 video frames of 3 tokens at 8 fps (times 1/16, 3/16, ...) and an audio latent of
20 tokens at 40 per second (times 1/80, 3/80, ...): two rates, two widths. The locality rule
of each coupling is written here from its documentation, not from its code.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from avblocks.attention.dispatch import attention_backend
from avblocks.attention.time_rope import TimeRotary
from avblocks.coupling import (
    BiBlockCoupling,
    CouplingConfig,
    GatedCrossAttention,
    GCMCoupling,
    JointAttention,
    RandomShiftCoupling,
    ResampledAddition,
    build_coupling,
)
from avblocks.coupling.reference import reference_couple

DV, DA, B = 16, 8, 2
FRAMES, PER_FRAME, AUDIO = 4, 3, 20
VIDEO_TIME = (torch.arange(FRAMES).repeat_interleave(PER_FRAME) + 0.5) / 8
AUDIO_TIME = (torch.arange(AUDIO) + 0.5) / 40

# name -> (constructor, rule(video token i, audio token j, module) -> may they interact)
_WINDOW = 0.09  # seconds: time differences here are multiples of 1/40 s, so none ties it


def _frame_v(i):
    return i // PER_FRAME


def _frame_a(j):  # the video frame an audio token belongs to
    return j // (AUDIO // FRAMES)


def _within(window):
    return lambda i, j, m: abs(float(VIDEO_TIME[i] - AUDIO_TIME[j])) <= window


COUPLINGS = {
    "cross": (lambda c: GatedCrossAttention(video_dim=DV, audio_dim=DA, heads=2, conditioned=c), None),
    "cross_window": (lambda c: GatedCrossAttention(video_dim=DV, audio_dim=DA, heads=2, window=_WINDOW,
                                                   conditioned=c), _within(_WINDOW)),
    "cross_no_rope": (lambda c: GatedCrossAttention(video_dim=DV, audio_dim=DA, heads=2, rotary=None,
                                                    conditioned=c), None),
    "joint": (lambda c: JointAttention(video_dim=DV, audio_dim=DA, heads=2, conditioned=c), None),
    "joint_window": (lambda c: JointAttention(video_dim=DV, audio_dim=DA, heads=2, window=_WINDOW,
                                              conditioned=c), _within(_WINDOW)),
    "resample": (lambda c: ResampledAddition(video_dim=DV, audio_dim=DA, conditioned=c),
                 _within(0.0625)),  # default window: half the video frame spacing
    "gcm": (lambda c: GCMCoupling(video_dim=DV, audio_dim=DA, heads=2, groups=2),
            lambda i, j, m: _frame_v(i) // 2 == _frame_a(j) // 2),
    "biblock": (lambda c: BiBlockCoupling(video_dim=DV, audio_dim=DA, heads=2, block_frames=1, halo=1),
                lambda i, j, m: abs(_frame_v(i) - _frame_a(j)) <= 1),
    "random_shift": (lambda c: RandomShiftCoupling(video_dim=DV, audio_dim=DA, heads=2, window=6, max_shift=7,
                                                   seed=3),
                     lambda i, j, m: (j - (_frame_v(i) * AUDIO // FRAMES + m.last_shift)) % AUDIO < 6),
}
CONDITIONED = {"cross", "cross_window", "cross_no_rope", "joint", "joint_window", "resample"}
CASES = [(name, c) for name in COUPLINGS for c in ((False, True) if name in CONDITIONED else (False,))]
IDS = [f"{n}{'-cond' if c else ''}" for n, c in CASES]


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, FRAMES * PER_FRAME, DV, generator=g), torch.randn(B, AUDIO, DA, generator=g),
            torch.randn(B, DV, generator=g), torch.randn(B, DA, generator=g))


def _make(name, conditioned, perturb=True):
    module = COUPLINGS[name][0](conditioned)
    if perturb:  # every zero-initialised gate and projection gets random values
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def _call(module, video, audio, vc, ac, vt=VIDEO_TIME, at=AUDIO_TIME):
    conditioned = any(getattr(m, "conditioned", False) for m in module.modules())
    return module(video, audio, vt, at, vc if conditioned else None, ac if conditioned else None)


@pytest.mark.parametrize("name,conditioned", CASES, ids=IDS)
def test_a_fresh_coupling_is_the_identity_and_learns(name, conditioned):
    module = _make(name, conditioned, perturb=False).train()
    video, audio, vc, ac = _inputs()
    out_v, out_a = _call(module, video, audio, vc, ac)
    assert torch.equal(out_v, video) and torch.equal(out_a, audio)
    (out_v.square().sum() + out_a.square().sum()).backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)  # the gates are not stuck at zero


@pytest.mark.parametrize("name,conditioned", CASES, ids=IDS)
def test_each_coupling_equals_its_plain_math_reference(name, conditioned):
    module = _make(name, conditioned).train()  # random shift draws its shift in training
    video, audio, vc, ac = _inputs(1)
    out_v, out_a = _call(module, video, audio, vc, ac)
    ref_v, ref_a = reference_couple(module, video, audio, VIDEO_TIME, AUDIO_TIME,
                                    vc if conditioned else None, ac if conditioned else None)
    assert not torch.allclose(ref_v, video.double()) and not torch.allclose(ref_a, audio.double())
    torch.testing.assert_close(out_v.double(), ref_v, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out_a.double(), ref_a, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(COUPLINGS))
@given(shift=st.floats(min_value=-40.0, max_value=40.0, allow_nan=False))
def test_shifting_both_streams_in_time_changes_nothing(name, shift):
    module = _make(name, name in CONDITIONED).eval()
    video, audio, vc, ac = _inputs(2)
    with torch.no_grad():
        base = _call(module, video, audio, vc, ac)
        moved = _call(module, video, audio, vc, ac, VIDEO_TIME + shift, AUDIO_TIME + shift)
    for a, b in zip(base, moved):
        torch.testing.assert_close(a, b, atol=5e-4, rtol=1e-4)


@pytest.mark.parametrize("name", [n for n, (_, rule) in COUPLINGS.items() if rule is not None])
@given(token=st.integers(min_value=0, max_value=AUDIO - 1))
def test_an_audio_change_moves_only_video_tokens_in_the_documented_window(name, token):
    module = _make(name, name in CONDITIONED).train()
    module.generator = torch.Generator().manual_seed(token) if hasattr(module, "generator") else None
    video, audio, vc, ac = _inputs(3)
    changed = audio.clone()
    changed[:, token] += torch.randn(DA, generator=torch.Generator().manual_seed(token))  # not a constant: norms remove those
    with torch.no_grad():
        before = _call(module, video, audio, vc, ac)[0]
        shift = getattr(module, "last_shift", 0)
        if hasattr(module, "generator"):
            module.generator = torch.Generator().manual_seed(token)  # the same draw again
        after = _call(module, video, changed, vc, ac)[0]
    assert getattr(module, "last_shift", 0) == shift
    rule = COUPLINGS[name][1]
    moved = (after - before).abs().amax(dim=(0, 2)) > 1e-6
    allowed = torch.tensor([rule(i, token, module) for i in range(FRAMES * PER_FRAME)])
    assert not bool((moved & ~allowed).any()), f"tokens outside the window moved: {moved.nonzero().tolist()}"
    assert bool(moved[allowed].all())  # and the ones inside did move


@pytest.mark.parametrize("name", [n for n, (_, rule) in COUPLINGS.items() if rule is not None])
def test_a_video_change_moves_only_audio_tokens_in_the_documented_window(name):
    module = _make(name, name in CONDITIONED).eval()  # random shift: shift 0 in eval
    video, audio, vc, ac = _inputs(4)
    rule = COUPLINGS[name][1]
    for token in (0, 5, FRAMES * PER_FRAME - 1):
        changed = video.clone()
        changed[:, token] += torch.randn(DV, generator=torch.Generator().manual_seed(token))
        with torch.no_grad():
            moved = (_call(module, changed, audio, vc, ac)[1] - _call(module, video, audio, vc, ac)[1])
        moved = moved.abs().amax(dim=(0, 2)) > 1e-6
        allowed = torch.tensor([rule(token, j, module) for j in range(AUDIO)])
        assert torch.equal(moved, allowed)


@pytest.mark.parametrize("name", ["cross_window", "joint_window", "resample", "random_shift", "biblock"])
@pytest.mark.parametrize("backend", ["math", "flex_eager"])
def test_every_attention_backend_gives_the_same_coupling(name, backend):
    module = _make(name, False).eval()
    video, audio, vc, ac = _inputs(5)
    with torch.no_grad():
        expected = _call(module, video, audio, vc, ac)  # sdpa, the default
        with attention_backend(backend):
            got = _call(module, video, audio, vc, ac)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rotary_positions_are_what_couples_by_time():
    """Without positions a cross-attention cannot tell where a sound is; with them it can."""
    video, audio, _, _ = _inputs(6)
    for rotary, expect_equal in ((None, True), (TimeRotary(scale=8.0), False)):
        module = GatedCrossAttention(video_dim=DV, audio_dim=DA, heads=2, rotary=rotary)
        with torch.no_grad():
            module.video_gate.gate.fill_(1.0)
            perm = torch.randperm(AUDIO)
            a = module(video, audio, VIDEO_TIME, AUDIO_TIME)[0]
            b = module(video, audio[:, perm], VIDEO_TIME, AUDIO_TIME)[0]  # sounds moved in time
        assert torch.allclose(a, b, atol=1e-5) == expect_equal


def test_bad_inputs_are_refused_with_the_value_named():
    module = GatedCrossAttention(video_dim=DV, audio_dim=DA, heads=2, conditioned=True)
    video, audio, vc, ac = _inputs()
    with pytest.raises(ValueError, match="conditioned=True"):
        module(video, audio, VIDEO_TIME, AUDIO_TIME)
    with pytest.raises(ValueError, match="video_time holds non-finite"):
        module(video, audio, VIDEO_TIME * float("nan"), AUDIO_TIME, vc, ac)
    with pytest.raises(ValueError, match=r"couples widths \(video 16, audio 8\)"):
        GatedCrossAttention(video_dim=DV, audio_dim=DA, heads=2)(video, torch.randn(B, AUDIO, DV), VIDEO_TIME,
                                                                 AUDIO_TIME)
    with pytest.raises(Exception, match="nv"):  # jaxtyping: times and tokens disagree in length
        module(video, audio, VIDEO_TIME[:-1], AUDIO_TIME, vc, ac)
    with pytest.raises(ValueError, match="even head width"):
        GatedCrossAttention(video_dim=DV, audio_dim=DA, dim=6, heads=2)
    with pytest.raises(ValueError, match=r"window \(-1"):
        JointAttention(video_dim=DV, audio_dim=DA, window=-1)
    windowed = GatedCrossAttention(video_dim=DV, audio_dim=DA, heads=2, window=0.001)
    with pytest.raises(ValueError, match="sees no key"):  # a window too small to reach any token
        windowed(video, audio, VIDEO_TIME, AUDIO_TIME)


def test_frame_based_adapters_refuse_streams_that_do_not_line_up():
    gcm = GCMCoupling(video_dim=DV, audio_dim=DA, heads=2, groups=2)
    video, audio, _, _ = _inputs()
    late = AUDIO_TIME.clone()
    late[7] += 0.2
    with pytest.raises(ValueError, match="time order"):
        gcm(video, audio, VIDEO_TIME, late)
    shifted = AUDIO_TIME + 0.1  # 0.1 s late: token 1 (0.1375 s) is off its frame 0 (0.0625 s)
    with pytest.raises(ValueError, match=r"audio token 1 at 0.1375 s is not within half a frame of video frame 0"):
        gcm(video, audio, VIDEO_TIME, shifted)
    with pytest.raises(ValueError, match="cannot be grouped onto 4 video frames"):
        gcm(video, audio[:, :18], VIDEO_TIME, AUDIO_TIME[:18])
    ragged = VIDEO_TIME.clone()
    ragged[2] = ragged[3]
    with pytest.raises(ValueError, match="different token counts"):
        gcm(video, audio, ragged, AUDIO_TIME)


def test_the_registry_builds_every_kind_from_a_config():
    for kind in ("cross", "joint", "resample", "gcm", "biblock", "random_shift"):
        module = build_coupling(CouplingConfig(kind=kind, heads=2, groups=2, shift_window=5), video_dim=DV,
                                audio_dim=DA)
        video, audio, vc, ac = _inputs()
        out = module(video, audio, VIDEO_TIME, AUDIO_TIME, vc, ac)
        assert torch.equal(out[0], video) and torch.equal(out[1], audio)
        assert isinstance(module, nn.Module)
    assert build_coupling(CouplingConfig(kind="none"), video_dim=DV, audio_dim=DA) is None
    with pytest.raises(ValueError, match=r"every \(0\)"):
        build_coupling(CouplingConfig(every=0), video_dim=DV, audio_dim=DA)
