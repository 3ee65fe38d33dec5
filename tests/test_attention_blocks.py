"""Attention blocks: shapes, zero-init identity, exact visibility against a plain-math reference,
locality / causality properties, backends agree, bad arguments, torch.compile without breaks.

The reference (``_ref_heads``) is written from the documented rule of each block: it attends
over *all* tokens of one batch element with an explicit boolean visibility matrix built from
token coordinates (frame, position, tile), one head at a time, in float64. No folding, no
masks from the library: if a block folds or masks differently from its documentation, the
reference disagrees.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from avblocks.attention.biblock import BiBlockCrossAttention, BlockBandMask
from avblocks.attention.dispatch import attention_backend
from avblocks.attention.gcm import GCMAttention
from avblocks.attention.mt_self import MTSelfAttention, PooledCausalMask
from avblocks.attention.projections import MultiHeadAttention
from avblocks.attention.spatiotemporal import SpatialAttention, TemporalAttention
from avblocks.typing import TYPECHECK

# ---------------------------------------------------------------------------------------------
# helpers


def _perturb(module: nn.Module, seed: int = 1) -> nn.Module:
    """Give every zero-initialised part (output projections, scale logits) random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, MultiHeadAttention):
                m.to_out.weight.copy_(torch.randn(m.to_out.weight.shape, generator=gen) * 0.5)
                m.to_out.bias.copy_(torch.randn(m.to_out.bias.shape, generator=gen) * 0.5)
        for name, p in module.named_parameters():
            if name.endswith("scale_logits"):
                p.copy_(torch.randn(p.shape, generator=gen))
    return module


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """One batch element ``c t ...`` -> tokens ``(t ...) c`` in frame-major order."""
    return x.reshape(x.shape[0], -1).T


def _coords(shape: tuple[int, ...]) -> torch.Tensor:
    """Coordinates ``(N, len(shape))`` of the tokens of a grid ``shape`` (frame-major)."""
    grids = torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


def _ref_heads(mha: MultiHeadAttention, xq, xkv, allowed) -> torch.Tensor:
    """Per-head attention ``(nq, heads, d)``; rows with no allowed key give 0."""
    hq, hk, d = mha.heads, mha.kv_heads, mha.head_dim
    q = (xq @ mha.to_q.weight.T + mha.to_q.bias).view(-1, hq, d)
    k = (xkv @ mha.to_k.weight.T + mha.to_k.bias).view(-1, hk, d)
    v = (xkv @ mha.to_v.weight.T + mha.to_v.bias).view(-1, hk, d)
    q, k = mha.q_norm(q), mha.k_norm(k)
    out = torch.zeros(q.shape[0], hq, d, dtype=q.dtype)
    for j in range(hq):
        kh = j // (hq // hk)  # consecutive query heads share a key/value head
        scores = (q[:, j] @ k[:, kh].T) / math.sqrt(d)
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        out[:, j] = probs @ v[:, kh]
    return out


def _ref_out(mha: MultiHeadAttention, heads_out) -> torch.Tensor:
    return heads_out.reshape(heads_out.shape[0], -1) @ mha.to_out.weight.T + mha.to_out.bias


def _bump(x: torch.Tensor) -> torch.Tensor:
    """A perturbation that varies across channels (a constant shift would vanish in LayerNorm)."""
    return torch.randn(x.shape, dtype=x.dtype)


def _changed(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """Boolean per frame ``t`` (dim 2 of ``b c t ...``): did anything change there?"""
    diff = (a - b).abs()
    return diff.transpose(0, 2).reshape(diff.shape[2], -1).amax(dim=1) > tol


# ---------------------------------------------------------------------------------------------
# zero-init identity and shapes

SELF_BLOCKS = [
    ("spatial", lambda: SpatialAttention(dim=8, heads=2), [(2, 8, 4, 3, 5), (2, 8, 3, 5)]),
    ("temporal", lambda: TemporalAttention(dim=8, heads=2, causal=True),
     [(2, 8, 4, 3, 5), (2, 8, 4, 5)]),
    ("mt_self", lambda: MTSelfAttention(dim=8, heads=2, kv_heads=1),
     [(2, 8, 8, 3, 5), (2, 8, 8, 5), (1, 8, 4, 2)]),
]


@pytest.mark.parametrize("name,make,shapes", SELF_BLOCKS, ids=[b[0] for b in SELF_BLOCKS])
def test_self_blocks_are_identity_at_init_and_keep_shape(name, make, shapes):
    block = make()
    for shape in shapes:
        x = torch.randn(shape)
        assert torch.equal(block(x), x)
        y = _perturb(make())(x)
        assert y.shape == x.shape and not torch.allclose(y, x)


CROSS_SHAPES = [
    ((2, 8, 4, 3, 5), (2, 6, 4, 2, 3)),  # volumes b c t h w / b c t f w, different widths
    ((2, 8, 4, 3), (2, 6, 4, 5)),  # planes th / tf
    ((2, 8, 4, 3, 5), (2, 6, 4, 7)),  # volume with a plane
]


@pytest.mark.parametrize("vshape,ashape", CROSS_SHAPES)
@pytest.mark.parametrize("kind", ["gcm", "biblock", "biblock_halo"])
def test_cross_blocks_are_identity_at_init_and_keep_shapes(kind, vshape, ashape):
    make = {
        "gcm": lambda: GCMAttention(video_dim=8, audio_dim=6, groups=2, heads=2, kv_heads=1),
        "biblock": lambda: BiBlockCrossAttention(video_dim=8, audio_dim=6, block_frames=2, heads=2),
        "biblock_halo": lambda: BiBlockCrossAttention(
            video_dim=8, audio_dim=6, dim=4, block_frames=1, halo=1, heads=2),
    }[kind]
    video, audio = torch.randn(vshape), torch.randn(ashape)
    v, a = make()(video, audio)
    assert torch.equal(v, video) and torch.equal(a, audio)
    v, a = _perturb(make())(video, audio)
    assert v.shape == video.shape and a.shape == audio.shape
    assert not torch.allclose(v, video) and not torch.allclose(a, audio)


def test_zero_init_branch_still_learns():
    """The zero-initialised output projection gets a non-zero gradient on the first step."""
    block = GCMAttention(video_dim=8, audio_dim=6, groups=2, heads=2)
    v, a = block(torch.randn(1, 8, 4, 3), torch.randn(1, 6, 4, 5))
    (v.square().sum() + a.square().sum()).backward()
    assert block.cross.video_from_audio.to_out.weight.grad.abs().sum() > 0
    assert block.cross.audio_from_video.to_out.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# exact visibility against the reference (float64)


def _self_reference(block, x, allowed_fn):
    """Reference for a residual self-attention block whose visibility is ``allowed_fn(coords)``."""
    outs = []
    for xb in x:
        tokens = _tokens(xb)
        c = _coords(tuple(xb.shape[1:]))
        allowed = allowed_fn(c[:, None, :], c[None, :, :])
        h = block.norm(tokens)
        out = tokens + _ref_out(block.attn, _ref_heads(block.attn, h, h, allowed))
        outs.append(out.T.reshape(xb.shape))
    return torch.stack(outs)


@pytest.mark.parametrize("shape", [(2, 8, 3, 2, 3), (2, 8, 4, 5)])
def test_spatial_matches_reference(shape):
    block = _perturb(SpatialAttention(dim=8, heads=2, kv_heads=1)).double()
    x = torch.randn(shape, dtype=torch.float64)
    if len(shape) == 5:
        def same_frame(qc, kc):
            return qc[..., 0] == kc[..., 0]
    else:
        def same_frame(qc, kc):
            return torch.ones_like(qc[..., 0], dtype=torch.bool)
    torch.testing.assert_close(block(x), _self_reference(block, x, same_frame))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 8, 4, 2, 3), (2, 8, 5, 3)])
def test_temporal_matches_reference(shape, causal):
    block = _perturb(TemporalAttention(dim=8, heads=2, causal=causal)).double()
    x = torch.randn(shape, dtype=torch.float64)

    def rule(qc, kc):
        same_place = (qc[..., 1:] == kc[..., 1:]).all(-1)
        return same_place & (qc[..., 0] >= kc[..., 0]) if causal else same_place

    torch.testing.assert_close(block(x), _self_reference(block, x, rule))


def _mt_reference(block: MTSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The documented MT-SelfAttn rule, one position sequence at a time."""
    b, c, t = x.shape[:3]
    seqs = x.reshape(b, c, t, -1)
    out = torch.empty_like(seqs)
    weights = torch.softmax(block.scale_logits, dim=0)  # scales x heads
    frames = torch.arange(t)
    for bi in range(b):
        for n in range(seqs.shape[3]):
            tokens = seqs[bi, :, :, n].T  # t c
            h = block.norm(tokens)
            num = torch.zeros(t, block.heads, block.attn.head_dim, dtype=x.dtype)
            den = torch.zeros(t, block.heads, 1, dtype=x.dtype)
            for si, s in enumerate(block.scales):
                pooled = h.view(t // s, s, c).mean(dim=1)  # key j = mean of frames sj..sj+s-1
                window_end = torch.arange(t // s) * s + s - 1
                if block.causal:
                    allowed = window_end[None, :] <= frames[:, None]
                else:
                    allowed = torch.ones(t, t // s, dtype=torch.bool)
                seen = allowed.any(dim=1).to(x.dtype)[:, None, None]
                o = _ref_heads(block.attn, h, pooled, allowed)
                w = weights[si][None, :, None] * seen
                num, den = num + w * o, den + w
            out[bi, :, :, n] = (tokens + _ref_out(block.attn, num / den)).T
    return out.reshape(x.shape)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 8, 4, 2, 2)])
def test_mt_self_matches_reference(shape, causal):
    block = _perturb(MTSelfAttention(dim=8, heads=2, kv_heads=1, causal=causal)).double()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(block(x), _mt_reference(block, x))


def test_pooled_causal_mask_rows():
    dense = PooledCausalMask(8, 4).dense()
    # key 0 covers frames 0..3: visible from frame 3 on; key 1 covers 4..7: from frame 7 on.
    expected = torch.tensor([[1, 0]] * 7 + [[1, 1]], dtype=torch.bool)
    assert torch.equal(dense, expected)  # rows 0..2 carry the placeholder key 0 (zeroed later)


def _cross_reference(cross, video, audio, allowed_fn):
    """Both directions over all tokens of one batch element; ``allowed_fn(vc, ac)`` is the
    video-sees-audio visibility; audio-sees-video is its transpose (documented symmetry)."""
    vouts, aouts = [], []
    for vb, ab in zip(video, audio, strict=True):
        vt, at = _tokens(vb), _tokens(ab)
        vc, ac = _coords(tuple(vb.shape[1:])), _coords(tuple(ab.shape[1:]))
        allowed = allowed_fn(vc, ac)
        vn, an = cross.video_norm(vt), cross.audio_norm(at)
        vo = vt + _ref_out(cross.video_from_audio, _ref_heads(cross.video_from_audio, vn, an,
                                                                allowed))
        ao = at + _ref_out(cross.audio_from_video, _ref_heads(cross.audio_from_video, an, vn,
                                                                allowed.T))
        vouts.append(vo.T.reshape(vb.shape))
        aouts.append(ao.T.reshape(ab.shape))
    return torch.stack(vouts), torch.stack(aouts)


@pytest.mark.parametrize("vshape,ashape", CROSS_SHAPES)
def test_gcm_matches_reference(vshape, ashape):
    groups = 2
    block = _perturb(GCMAttention(video_dim=8, audio_dim=6, groups=groups, dim=4, heads=2,
                                  kv_heads=1, qk_norm=True)).double()
    video = torch.randn(vshape, dtype=torch.float64)
    audio = torch.randn(ashape, dtype=torch.float64)
    size = vshape[2] // groups

    def same_group(vc, ac):
        return (vc[:, None, 0] // size) == (ac[None, :, 0] // size)

    expected = _cross_reference(block.cross, video, audio, same_group)
    for got, want in zip(block(video, audio), expected, strict=True):
        torch.testing.assert_close(got, want)


def _biblock_rule(t, bt, halo, shift, vshape, ashape, spatial_blocks):
    """Documented Bi-Block visibility: video frame i pairs with audio frame (i + shift) mod t;
    time blocks of bt frames within ``halo``; tiles by relative position must match."""

    def tile(c, shape):
        ids = torch.zeros(c.shape[0], dtype=torch.long)
        for axis, n in enumerate(spatial_blocks):
            ids = ids * n + c[:, axis + 1] // (shape[axis + 1] // n)
        return ids

    def rule(vc, ac):
        vblock = vc[:, 0] // bt
        ablock = ((ac[:, 0] - shift) % t) // bt  # audio frame's position after the roll
        near = (vblock[:, None] - ablock[None, :]).abs() <= halo
        same_tile = tile(vc, vshape[2:])[:, None] == tile(ac, ashape[2:])[None, :]
        return near & same_tile

    return rule


@pytest.mark.parametrize(
    "vshape,ashape,bt,halo,spatial_blocks,shift",
    [
        ((2, 8, 4, 2, 4), (2, 6, 4, 6, 2), 2, 0, (2, 1), 0),
        ((2, 8, 6, 2, 4), (2, 6, 6, 6, 2), 1, 1, (1, 2), 0),
        ((1, 8, 6, 4), (1, 6, 6, 2), 2, 1, (2,), 3),
        ((1, 8, 6, 4), (1, 6, 6, 2, 3), 3, 0, (), 1),
    ],
)
def test_biblock_matches_reference(vshape, ashape, bt, halo, spatial_blocks, shift):
    block = _perturb(BiBlockCrossAttention(video_dim=8, audio_dim=6, block_frames=bt, halo=halo,
                                           spatial_blocks=spatial_blocks, heads=2)).double()
    video = torch.randn(vshape, dtype=torch.float64)
    audio = torch.randn(ashape, dtype=torch.float64)
    rule = _biblock_rule(vshape[2], bt, halo, shift, vshape, ashape, spatial_blocks)
    expected = _cross_reference(block.cross, video, audio, rule)
    for got, want in zip(block(video, audio, shift=shift), expected, strict=True):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# locality / causality properties (hypothesis)

layouts = st.sampled_from(["plane", "volume"])


def _shape(batch, c, t, layout, a, b):
    return (batch, c, t, a) if layout == "plane" else (batch, c, t, a, b)


@given(groups=st.integers(1, 4), per_group=st.integers(1, 3), vl=layouts, al=layouts,
       sizes=st.tuples(*[st.integers(1, 3)] * 4), data=st.data())
def test_gcm_changes_stay_in_their_group(groups, per_group, vl, al, sizes, data):
    t = groups * per_group
    block = _perturb(GCMAttention(video_dim=4, audio_dim=6, groups=groups, heads=2)).double()
    video = torch.randn(_shape(1, 4, t, vl, *sizes[:2]), dtype=torch.float64)
    audio = torch.randn(_shape(1, 6, t, al, *sizes[2:]), dtype=torch.float64)
    frame = data.draw(st.integers(0, t - 1))
    group_frames = torch.arange(t) // per_group == frame // per_group
    v0, a0 = block(video, audio)
    a_bumped = audio.clone()
    a_bumped[:, :, frame] += _bump(a_bumped[:, :, frame])
    v1, a1 = block(video, a_bumped)
    assert torch.equal(_changed(v0, v1), group_frames)  # video: exactly the bumped group
    assert not _changed(a0, a1)[~group_frames].any()
    v_bumped = video.clone()
    v_bumped[:, :, frame] += _bump(v_bumped[:, :, frame])
    v2, a2 = block(v_bumped, audio)
    assert torch.equal(_changed(a0, a2), group_frames)  # and vice versa
    assert not _changed(v0, v2)[~group_frames].any()


@given(blocks=st.integers(1, 4), bt=st.integers(1, 2), halo=st.integers(0, 2),
       shift=st.integers(0, 7), tiles=st.sampled_from([(), (1,), (2,)]), data=st.data())
def test_biblock_changes_stay_in_their_window(blocks, bt, halo, shift, tiles, data):
    t = blocks * bt
    block = _perturb(BiBlockCrossAttention(video_dim=4, audio_dim=6, block_frames=bt, halo=halo,
                                           spatial_blocks=tiles, heads=2)).double()
    video = torch.randn(1, 4, t, 4, dtype=torch.float64)
    audio = torch.randn(1, 6, t, 2, dtype=torch.float64)
    frame = data.draw(st.integers(0, t - 1))
    v0, a0 = block(video, audio, shift=shift)
    bumped = audio.clone()
    # one audio frame; the first tile only when tiled
    bumped[:, :, frame, :1] += _bump(bumped[:, :, frame, :1])
    v1, _ = block(video, bumped, shift=shift)
    audio_block = ((frame - shift) % t) // bt
    near = (torch.arange(t) // bt - audio_block).abs() <= halo
    assert torch.equal(_changed(v0, v1), near)  # exactly the video frames in its window
    if tiles == (2,):  # and within those frames only the first video tile (rows 0..1)
        assert torch.equal((v0 - v1)[..., 2:].abs().amax(), torch.zeros((), dtype=v0.dtype))
    vb = video.clone()
    vb[:, :, frame] += _bump(vb[:, :, frame])
    _, a2 = block(vb, audio, shift=shift)
    audio_frames_block = ((torch.arange(t) - shift) % t) // bt
    assert torch.equal(_changed(a0, a2), (audio_frames_block - frame // bt).abs() <= halo)


@given(t_blocks=st.integers(1, 3), frame=st.integers(0, 11), layout=layouts)
def test_mt_self_causal_never_sees_the_future(t_blocks, frame, layout):
    t = 4 * t_blocks
    frame = frame % t
    block = _perturb(MTSelfAttention(dim=4, heads=2, causal=True)).double()
    x = torch.randn(_shape(1, 4, t, layout, 2, 2), dtype=torch.float64)
    bumped = x.clone()
    bumped[:, :, frame] += _bump(bumped[:, :, frame])
    changed = _changed(block(x), block(bumped))
    assert torch.equal(changed, torch.arange(t) >= frame)  # the past never moves; rest does
    # and without causality every frame moves
    free = _perturb(MTSelfAttention(dim=4, heads=2)).double()
    assert _changed(free(x), free(bumped)).all()


def test_mt_self_causal_gradient_has_no_future_path():
    block = _perturb(MTSelfAttention(dim=4, heads=2, causal=True))
    x = torch.randn(1, 4, 8, 3, requires_grad=True)
    block(x)[:, :, 4].sum().backward()
    per_frame = x.grad.abs().sum(dim=(0, 1, 3))
    assert (per_frame[5:] == 0).all() and (per_frame[:5] > 0).all()


def test_spatial_and_temporal_locality():
    x = torch.randn(1, 4, 3, 2, 2)
    bumped = x.clone()
    bumped[:, :, 1, 0, 0] += _bump(bumped[:, :, 1, 0, 0])
    spatial = _perturb(SpatialAttention(dim=4, heads=2))
    assert torch.equal(_changed(spatial(x), spatial(bumped), 1e-6), torch.tensor([0, 1, 0]) > 0)
    temporal = _perturb(TemporalAttention(dim=4, heads=2))
    diff = (temporal(x) - temporal(bumped)).abs().amax(dim=(0, 1, 2))
    assert diff[0, 0] > 0 and (diff.flatten()[1:] == 0).all()  # only position (0, 0) moves


# ---------------------------------------------------------------------------------------------
# backends agree ("fused path off vs on")


def _all_blocks():
    return [
        (SpatialAttention(dim=8, heads=4, kv_heads=2, qk_norm=True), (2, 8, 4, 3, 5)),
        (TemporalAttention(dim=8, heads=2, causal=True, qk_norm=True), (2, 8, 6, 3, 2)),
        (MTSelfAttention(dim=8, heads=2, causal=True, qk_norm=True), (2, 8, 8, 5)),
        (MTSelfAttention(dim=8, heads=2, kv_heads=1), (2, 8, 8, 2, 3)),
        (GCMAttention(video_dim=8, audio_dim=6, groups=2, heads=2, kv_heads=1, qk_norm=True),
         ((2, 8, 4, 3, 5), (2, 6, 4, 2, 3))),
        (BiBlockCrossAttention(video_dim=8, audio_dim=6, block_frames=2, spatial_blocks=(3, 1),
                               heads=2), ((2, 8, 4, 3, 5), (2, 6, 4, 6, 3))),
        (BiBlockCrossAttention(video_dim=8, audio_dim=6, halo=1, heads=2, kv_heads=1),
         ((2, 8, 4, 3), (2, 6, 4, 5))),
    ]


def _inputs(shape):
    if isinstance(shape[0], tuple):
        return tuple(torch.randn(s) for s in shape)
    return (torch.randn(shape),)


@pytest.mark.parametrize("index", range(len(_all_blocks())))
def test_backends_agree(index):
    block, shape = _all_blocks()[index]
    block = _perturb(block)
    inputs = _inputs(shape)
    results = {}
    for backend in ("math", "sdpa", "flex_eager"):
        with attention_backend(backend), torch.no_grad():  # flex has no CPU backward
            out = block(*inputs)
        results[backend] = out if isinstance(out, tuple) else (out,)
    for backend in ("sdpa", "flex_eager"):
        for got, want in zip(results[backend], results["math"], strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# torch.compile: one graph, no recompile


@pytest.mark.parametrize("index", range(len(_all_blocks())))
def test_compiles_fullgraph_without_recompile(index):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    block, shape = _all_blocks()[index]
    block = _perturb(block).eval()
    counter = CompileCounter()
    compiled = torch.compile(block, backend=counter, fullgraph=True)
    inputs = _inputs(shape)
    got, want = compiled(*inputs), block(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,), strict=True):
        torch.testing.assert_close(g, w)
    compiled(*[torch.randn_like(x) for x in inputs])
    assert counter.frame_count == 1


# ---------------------------------------------------------------------------------------------
# random shift (training only, reproducible)


def test_random_shift_is_training_only_and_seeded():
    def make():
        return BiBlockCrossAttention(video_dim=4, audio_dim=4, heads=2, max_shift=5, seed=7)

    one, two = make().train(), make().train()
    draws = [one.draw_shift() for _ in range(40)]
    assert draws == [two.draw_shift() for _ in range(40)]  # same seed, same shifts
    assert set(draws) == set(range(6))  # uniform over 0..max_shift (40 draws hit all 6)
    assert one.eval().draw_shift() == 0
    block = _perturb(make()).double().eval()
    video = torch.randn(1, 4, 6, 2, dtype=torch.float64)
    audio = torch.randn(1, 4, 6, 3, dtype=torch.float64)
    eval_out = block(video, audio)
    for got, want in zip(eval_out, block(video, audio, shift=0), strict=True):
        assert torch.equal(got, want)
    # in training the forward uses the next seeded draw: replay it on a twin with shift=...
    twin = make().double().train()
    twin.load_state_dict(block.state_dict())  # same weights, a fresh generator with seed 7
    block.train()
    shifts = [twin.draw_shift() for _ in range(3)]
    assert len(set(shifts)) > 1  # the draws differ, so the comparison below can fail
    for s in shifts:
        for got, want in zip(block(video, audio), twin(video, audio, shift=s), strict=True):
            assert torch.equal(got, want)


def test_block_band_mask_rows():
    dense = BlockBandMask(3, 1, 2, 1).dense()
    expected = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]) > 0
    assert torch.equal(dense, expected)


# ---------------------------------------------------------------------------------------------
# bad configuration and bad inputs name the values


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: SpatialAttention(dim=10, heads=4), r"dim \(10\).*heads \(4\)"),
        (lambda: TemporalAttention(dim=8, heads=4, kv_heads=3), r"heads \(4\).*kv_heads \(3\)"),
        (lambda: MTSelfAttention(dim=8, heads=2, scales=(1, 2, 2)), r"scales \(\(1, 2, 2\)\)"),
        (lambda: MTSelfAttention(dim=8, heads=2, scales=(2, 4), causal=True), r"\(\(2, 4\)\)"),
        (lambda: GCMAttention(video_dim=8, audio_dim=4, groups=0), r"groups \(0\)"),
        (lambda: GCMAttention(video_dim=8, audio_dim=4, dim=6, heads=4), r"dim \(6\).*heads \(4\)"),
        (lambda: BiBlockCrossAttention(video_dim=8, audio_dim=4, halo=-1), r"halo \(-1\)"),
        (lambda: BiBlockCrossAttention(video_dim=8, audio_dim=4, spatial_blocks=(2, 0)),
         r"spatial_blocks \(\(2, 0\)\)"),
    ],
)
def test_bad_config_raises_naming_values(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: GCMAttention(video_dim=4, audio_dim=4, groups=3, heads=2)(
            torch.randn(1, 4, 4, 2), torch.randn(1, 4, 4, 2)), r"t \(4\).*groups \(3\)"),
        (lambda: MTSelfAttention(dim=4, heads=2)(torch.randn(1, 4, 6, 2)),
         r"t \(6\).*scale \(4\)"),
        (lambda: MTSelfAttention(dim=4, heads=2)(torch.randn(1, 4, 4, 2, 2, 2)), "got shape"),
        (lambda: BiBlockCrossAttention(video_dim=4, audio_dim=4, block_frames=3, heads=2)(
            torch.randn(1, 4, 4, 2), torch.randn(1, 4, 4, 2)), r"t \(4\).*block_frames \(3\)"),
        (lambda: BiBlockCrossAttention(video_dim=4, audio_dim=4, spatial_blocks=(2,), heads=2)(
            torch.randn(1, 4, 4, 3), torch.randn(1, 4, 4, 2)), r"video axis 3 \(3\)"),
        (lambda: BiBlockCrossAttention(video_dim=4, audio_dim=4, spatial_blocks=(2,), heads=2)(
            torch.randn(1, 4, 4, 2), torch.randn(1, 4, 4, 2, 2)), r"audio has shape"),
        (lambda: SpatialAttention(dim=4, heads=2)(torch.randn(1, 4, 3)), "got shape"),
    ],
)
def test_bad_inputs_raise_naming_values(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(not TYPECHECK, reason="AVBLOCKS_TYPECHECK=0 in this run")
def test_misaligned_streams_are_refused_by_the_shape_check():
    block = GCMAttention(video_dim=4, audio_dim=4, groups=1, heads=2)
    with pytest.raises(Exception, match="t=4"):
        block(torch.randn(1, 4, 4, 2), torch.randn(1, 4, 5, 2))  # audio t differs from video t


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    """The one inductor compile of this file (opt-in): causal MT-SelfAttn, masks included."""
    torch._dynamo.reset()
    block = _perturb(MTSelfAttention(dim=8, heads=2, causal=True)).eval()
    x = torch.randn(2, 8, 8, 3)
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x), atol=1e-5, rtol=1e-5)
