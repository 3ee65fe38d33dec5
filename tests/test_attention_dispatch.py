"""attend(): every backend against an independent float64 formula and against "math",
locality of masks, permutation equivariance, backend selection, errors, torch.compile."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from avblocks.attention import (
    BACKENDS,
    Backend,
    BlockWindowMask,
    FrameCausalMask,
    FullMask,
    GroupMask,
    Mask,
    RandomShiftMask,
    SlidingTileMask,
    UnsupportedAttentionError,
    attend,
    attention_backend,
    get_backend,
)
from avblocks.attention.dispatch import ENV_VAR
from avblocks.typing import Float, Tensor, shapecheck

# Masks of every family, small; (q_len, kv_len) from the mask.
MASKS = {
    "none": None,
    "full": FullMask(24, 24),
    "frame_causal": FrameCausalMask(num_frames=6, tokens_per_frame=4),
    "token_causal": FrameCausalMask(num_frames=24, tokens_per_frame=1),
    "block_window": BlockWindowMask(grid=(2, 3, 4), block=(1, 3, 2), halo=(0, 0, 1)),
    "group_cross": GroupMask.uniform(num_groups=3, q_group_size=8, kv_group_size=5),
    "group_ids": GroupMask([0, 1, 2, 1] * 6, [2, 1, 0, 0, 1] * 3),
    "sliding_tile": SlidingTileMask(grid=(2, 3, 4), tile=(1, 1, 2), window=(1, 3, 1)),
    "sliding_tile_tiled": SlidingTileMask((2, 4, 4), (1, 2, 2), (1, 1, 1), token_order="tiled"),
    "random_shift": RandomShiftMask(6, 4, 4, 5, shift=3, window=2),
}
EAGER_BACKENDS = ["math", "sdpa", "flex_eager"]


def lengths(mask: Mask | None) -> tuple[int, int]:
    return (24, 24) if mask is None else (mask.q_len, mask.kv_len)


def qkv(mask, b=2, hq=4, hk=2, d=16, dtype=torch.float32, grad=False):
    nq, nk = lengths(mask)
    q = torch.randn(b, hq, nq, d, dtype=dtype, requires_grad=grad)
    k = torch.randn(b, hk, nk, d, dtype=dtype, requires_grad=grad)
    v = torch.randn(b, hk, nk, d, dtype=dtype, requires_grad=grad)
    return q, k, v


def reference(q, k, v, allowed, scale=None):
    """Row by row in float64: softmax over the allowed keys only, GQA by index mapping."""
    b, hq, nq, d = q.shape
    hk = k.shape[1]
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = torch.zeros(b, hq, nq, d, dtype=torch.float64)
    for h in range(hq):
        kh = h // (hq // hk)
        for i in range(nq):
            keys = allowed[i].nonzero().flatten()
            s = (q[:, h, i].double()[:, None, :] * k[:, kh, keys].double()).sum(-1) * scale
            p = torch.exp(s - s.max(dim=-1, keepdim=True).values)
            p = p / p.sum(dim=-1, keepdim=True)
            out[:, h, i] = (p[..., None] * v[:, kh, keys].double()).sum(1)
    return out


@pytest.mark.parametrize("name", list(MASKS))
def test_math_backend_matches_float64_formula(name):
    mask = MASKS[name]
    q, k, v = qkv(mask)
    nq, nk = lengths(mask)
    allowed = torch.ones(nq, nk, dtype=torch.bool) if mask is None else mask.dense()
    out = attend(q, k, v, mask, backend="math")
    torch.testing.assert_close(out.double(), reference(q, k, v, allowed), atol=1e-5, rtol=1e-5)
    out = attend(q, k, v, mask, backend="math", scale=0.3)
    torch.testing.assert_close(
        out.double(), reference(q, k, v, allowed, scale=0.3), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("backend", ["sdpa", "flex_eager"])
@pytest.mark.parametrize("name", list(MASKS))
def test_backend_forward_matches_math(backend, name):
    mask = MASKS[name]
    for hq, hk in [(4, 4), (4, 2), (3, 1)]:  # MHA, GQA, MQA
        q, k, v = qkv(mask, hq=hq, hk=hk)
        ref = attend(q, k, v, mask, backend="math")
        out = attend(q, k, v, mask, backend=backend)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        out = attend(q, k, v, mask, backend=backend, scale=0.2)
        torch.testing.assert_close(
            out, attend(q, k, v, mask, backend="math", scale=0.2), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("name", list(MASKS))
def test_sdpa_gradients_match_math(name):
    mask = MASKS[name]
    q, k, v = qkv(mask, grad=True)
    g = torch.randn(q.shape)
    grads = {}
    for backend in ["math", "sdpa"]:
        out = attend(q, k, v, mask, backend=backend)
        grads[backend] = torch.autograd.grad(out, (q, k, v), g)
    for a, b in zip(grads["sdpa"], grads["math"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_flex_refuses_cpu_backward_instead_of_dropping_it():
    q, k, v = qkv(MASKS["frame_causal"], grad=True)
    with pytest.raises(UnsupportedAttentionError, match="no backward on CPU"):
        attend(q, k, v, MASKS["frame_causal"], backend="flex_eager")
    with torch.no_grad():  # inference is fine
        attend(q, k, v, MASKS["frame_causal"], backend="flex_eager")


@pytest.mark.parametrize("backend", EAGER_BACKENDS)
def test_mask_none_equals_all_true_mask(backend):
    q, k, v = qkv(None, hq=2, hk=2)
    k, v = k[:, :, :10], v[:, :, :10]  # nq != nk
    full = attend(q, k, v, FullMask(24, 10), backend=backend)
    torch.testing.assert_close(attend(q, k, v, None, backend=backend), full, atol=0, rtol=0)
    # and an all-true mask of another family, which takes the masked path
    group = GroupMask([0] * 24, [0] * 10)
    torch.testing.assert_close(attend(q, k, v, group, backend=backend), full, atol=1e-6, rtol=1e-6)


def test_low_precision_runs_in_float32_and_keeps_dtype():
    mask = MASKS["block_window"]
    q, k, v = qkv(mask, dtype=torch.bfloat16)
    out = attend(q, k, v, mask, backend="math")
    assert out.dtype == torch.bfloat16
    ref = attend(q.float(), k.float(), v.float(), mask, backend="math")
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(
        attend(q, k, v, mask, backend="sdpa").float(), ref, atol=2e-2, rtol=2e-2
    )


# ---- locality: keys outside a query's window cannot move its output ---------------------


@st.composite
def any_mask(draw):
    family = draw(st.sampled_from(["block", "tile", "causal", "group", "shift"]))
    if family in ("block", "tile"):
        grid = tuple(draw(st.sampled_from([1, 2, 3, 4])) for _ in range(3))
        part = tuple(
            draw(st.sampled_from([d for d in range(1, g + 1) if g % d == 0])) for g in grid
        )
        if family == "block":
            halo = tuple(draw(st.integers(0, 1)) for _ in range(3))
            return BlockWindowMask(grid=grid, block=part, halo=halo)
        window = tuple(draw(st.integers(1, g // p)) for g, p in zip(grid, part, strict=True))
        return SlidingTileMask(grid=grid, tile=part, window=window)
    if family == "causal":
        return FrameCausalMask(draw(st.integers(1, 6)), draw(st.integers(1, 4)))
    if family == "group":
        return GroupMask.uniform(
            draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
        )
    fk = draw(st.integers(1, 6))
    return RandomShiftMask(
        draw(st.integers(1, 4)),
        draw(st.integers(1, 3)),
        fk,
        draw(st.integers(1, 3)),
        shift=draw(st.integers(0, 5)),
        window=draw(st.integers(1, fk)),
    )


@given(any_mask(), st.sampled_from(["math", "sdpa", "flex_eager"]), st.data())
def test_outputs_ignore_keys_outside_the_mask(mask, backend, data):
    q, k, v = qkv(mask, b=1, hq=2, hk=1, d=8)
    changed = torch.tensor(
        data.draw(st.lists(st.booleans(), min_size=mask.kv_len, max_size=mask.kv_len))
    )
    k2, v2 = k.clone(), v.clone()
    k2[:, :, changed] += torch.randn_like(k2[:, :, changed])
    v2[:, :, changed] += torch.randn_like(v2[:, :, changed])
    out = attend(q, k, v, mask, backend=backend)
    out2 = attend(q, k2, v2, mask, backend=backend)
    touched = (mask.dense() & changed[None, :]).any(dim=1)  # queries that see a changed key
    assert torch.equal(out[:, :, ~touched], out2[:, :, ~touched])
    moved = (out - out2).abs().amax(dim=(0, 1, 3)) > 0
    assert torch.equal(moved, touched)  # and the others do move (the test can fail)


def test_sta_tiled_order_gives_the_raster_result_permuted():
    raster = SlidingTileMask(grid=(4, 4, 4), tile=(2, 2, 2), window=(1, 1, 1))
    tiled = SlidingTileMask(grid=(4, 4, 4), tile=(2, 2, 2), window=(1, 1, 1), token_order="tiled")
    q, k, v = qkv(raster)
    perm, inv = tiled.permutation(), tiled.inverse_permutation()
    out = attend(q[:, :, perm], k[:, :, perm], v[:, :, perm], tiled, backend="flex_eager")
    torch.testing.assert_close(out[:, :, inv], attend(q, k, v, raster, backend="math"))


@pytest.mark.parametrize("backend", EAGER_BACKENDS)
def test_unmasked_attention_is_permutation_equivariant(backend):
    q, k, v = qkv(None, hq=4, hk=2)
    out = attend(q, k, v, backend=backend)
    pq, pk = torch.randperm(24), torch.randperm(24)
    torch.testing.assert_close(attend(q[:, :, pq], k, v, backend=backend), out[:, :, pq])
    torch.testing.assert_close(attend(q, k[:, :, pk], v[:, :, pk], backend=backend), out)
    # only keys moved without their values: the output must change
    assert not torch.allclose(attend(q, k[:, :, pk], v, backend=backend), out, atol=1e-3)


# ---- backend selection and errors ---------------------------------------------------------


class Spy(Backend):
    name = "spy"

    def __init__(self):
        self.calls = 0

    def run(self, q, k, v, mask, scale):
        self.calls += 1
        return torch.zeros_like(q)


def test_backend_precedence(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert get_backend().name == "sdpa"  # default
    monkeypatch.setenv(ENV_VAR, "math")
    assert get_backend().name == "math"  # env var > default
    with attention_backend("flex_eager"):
        assert get_backend().name == "flex_eager"  # context > env var
        assert get_backend("sdpa").name == "sdpa"  # argument > context
        with attention_backend("sdpa"):
            assert get_backend().name == "sdpa"  # innermost context wins
        assert get_backend().name == "flex_eager"
    assert get_backend().name == "math"
    # and attend() really runs the chosen one
    spy = Spy()
    monkeypatch.setitem(BACKENDS, "spy", spy)
    q, k, v = qkv(None)
    monkeypatch.setenv(ENV_VAR, "spy")
    assert attend(q, k, v).abs().sum() == 0 and spy.calls == 1
    assert attend(q, k, v, backend="math").abs().sum() > 0 and spy.calls == 1
    with attention_backend(spy):
        attend(q, k, v)
    assert spy.calls == 2


def test_unknown_backend_names_the_valid_ones(monkeypatch):
    q, k, v = qkv(None)
    with pytest.raises(ValueError, match=r"unknown attention backend 'fast'.*'math'.*'sdpa'"):
        attend(q, k, v, backend="fast")
    with pytest.raises(ValueError, match="unknown attention backend"):
        with attention_backend("fast"):
            pass
    monkeypatch.setenv(ENV_VAR, "nope")
    with pytest.raises(ValueError, match=rf"'nope'.*\${ENV_VAR}"):
        attend(q, k, v)


def test_requests_a_backend_cannot_honour_raise():
    class DenseOnly(Mask):
        q_len = kv_len = 24

        def key(self):
            return ("DenseOnly",)

        def dense(self, device=None):
            return torch.ones(24, 24, dtype=torch.bool).tril()

    q, k, v = qkv(None)
    with pytest.raises(UnsupportedAttentionError, match="needs a mask with mask_mod"):
        attend(q, k, v, DenseOnly(), backend="flex_eager")
    # ... while sdpa and math honour it
    torch.testing.assert_close(
        attend(q, k, v, DenseOnly(), backend="sdpa"),
        attend(q, k, v, FrameCausalMask(24, 1), backend="math"),
    )
    with pytest.raises(UnsupportedAttentionError, match="float64"):
        attend(q.double(), k.double(), v.double(), backend="flex")


def test_invalid_inputs_raise():
    q, k, v = qkv(None, hq=3, hk=2)
    with pytest.raises(
        ValueError, match=r"query heads \(3\) must be a multiple of key/value heads \(2\)"
    ):
        attend(q, k, v)
    q, k, v = qkv(None)
    with pytest.raises(ValueError, match=r"q_len=12, kv_len=12.*24 tokens"):
        attend(q, k, v, FrameCausalMask(3, 4))
    with pytest.raises(Exception, match="d"):  # shape check: head dims differ
        attend(q, k[..., :8], v)


# ---- torch.compile ------------------------------------------------------------------------


class Attn(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    @shapecheck
    def forward(
        self,
        q: Float[Tensor, "b hq n d"],
        k: Float[Tensor, "b hk m d"],
        v: Float[Tensor, "b hk m d"],
    ) -> Float[Tensor, "b hq n d"]:
        return attend(q, k, v, self.mask)


@pytest.mark.parametrize("name", list(MASKS))
def test_sdpa_compiles_fullgraph_and_follows_context(name):
    torch._dynamo.reset()
    mask = MASKS[name]
    q, k, v = qkv(mask)
    compiled = torch.compile(Attn(mask), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(q, k, v), attend(q, k, v, mask, backend="math"))
    with attention_backend("math"):  # guarded: the context switch is seen, not baked in
        torch.testing.assert_close(
            compiled(q, k, v), attend(q, k, v, mask, backend="math"), atol=0, rtol=0
        )


def test_compiled_flex_matches_math_and_compiles_once_per_mask():
    """The one compiled-flex test of the default suite (compiling on CPU takes seconds)."""
    from torch._dynamo.utils import counters

    from avblocks.attention.flex import COMPILED

    mask = FrameCausalMask(num_frames=4, tokens_per_frame=8)
    q, k, v = qkv(mask, b=1, hq=2, hk=1, d=16)
    before = len(COMPILED)
    out = attend(q, k, v, mask, backend="flex")
    torch.testing.assert_close(out, attend(q, k, v, mask, backend="math"), atol=1e-5, rtol=1e-5)
    assert len(COMPILED) == before + 1
    graphs = counters["stats"]["unique_graphs"]
    # an equal mask built anew (as blocks do every forward) reuses the compiled kernel
    out2 = attend(q, k, v, FrameCausalMask(num_frames=4, tokens_per_frame=8), backend="flex")
    assert torch.equal(out, out2)
    assert len(COMPILED) == before + 1
    assert counters["stats"]["unique_graphs"] == graphs  # no recompile


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MASKS if n not in ("none", "full")])
def test_compiled_flex_matches_math_every_family(name):
    mask = MASKS[name]
    q, k, v = qkv(mask)
    torch.testing.assert_close(
        attend(q, k, v, mask, backend="flex"),
        attend(q, k, v, mask, backend="math"),
        atol=1e-5,
        rtol=1e-5,
    )
