"""Tri-plane projection: exact round trips of plane-separable volumes, checked against numpy."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.latent.triplane import (
    AttentionPool,
    TriPlane,
    TriPlaneProjector,
    TriPlaneUnprojector,
    VolumeMix,
    triplane_tokens,
    volume_tokens,
)
from avblocks.typing import TYPECHECK

sizes = st.integers(1, 6)
dims = st.tuples(st.integers(1, 2), st.integers(1, 3), sizes, sizes, sizes)
seeds = st.integers(0, 2**31 - 1)

project = TriPlaneProjector(pooling="mean")
exact = TriPlaneUnprojector(combine="exact")
plain_sum = TriPlaneUnprojector(combine="sum")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _separable(b, c, t, h, w, seed):
    g = _gen(seed)
    a = torch.randn(b, c, 1, h, w, generator=g)
    bb = torch.randn(b, c, t, h, 1, generator=g)
    cc = torch.randn(b, c, t, 1, w, generator=g)
    return a + bb + cc


def _anova_projection_numpy(v):
    """Pi(v) = E_t + E_w + E_h - E_hw - E_tw - E_th + E_thw, in float64 numpy (axes 2,3,4)."""
    v = v.astype(np.float64)

    def e(*axes):
        return v.mean(axis=axes, keepdims=True)

    return e(2) + e(4) + e(3) - e(3, 4) - e(2, 4) - e(2, 3) + e(2, 3, 4)


@given(dims, seeds)
def test_separable_volumes_round_trip_exactly(dims, seed):
    v = _separable(*dims, seed)
    torch.testing.assert_close(exact(project(v)), v, atol=1e-5, rtol=0)


@given(dims, seeds)
def test_unproject_project_is_the_anova_projection(dims, seed):
    v = torch.randn(*dims, generator=_gen(seed))
    ref = _anova_projection_numpy(v.numpy())
    np.testing.assert_allclose(exact(project(v)).numpy(), ref, atol=1e-5, rtol=0)


@given(dims, seeds)
def test_unproject_project_is_idempotent_and_project_is_preserved(dims, seed):
    v = torch.randn(*dims, generator=_gen(seed))
    y = exact(project(v))
    torch.testing.assert_close(exact(project(y)), y, atol=1e-5, rtol=0)
    p, py = project(v), project(y)
    for name in ("hw", "th", "tw"):
        torch.testing.assert_close(getattr(py, name), getattr(p, name), atol=1e-5, rtol=0)


@given(st.integers(2, 6), st.integers(2, 6), st.integers(2, 6), seeds)
def test_product_volume_loses_exactly_its_three_way_term(t, h, w, seed):
    g = _gen(seed)
    x, y, z = torch.randn(t, generator=g), torch.randn(h, generator=g), torch.randn(w, generator=g)
    x, y, z = x + 1.0, y - 0.5, z + 2.0  # non-zero means: every ANOVA term present
    v = torch.einsum("t,h,w->thw", x, y, z)[None, None]
    residual = v - exact(project(v))
    xc, yc, zc = (a.numpy() - a.numpy().mean() for a in (x, y, z))
    three_way = np.einsum("t,h,w->thw", xc, yc, zc)[None, None]
    np.testing.assert_allclose(residual.numpy(), three_way, atol=1e-4, rtol=0)
    if np.abs(three_way).max() > 1e-2:  # a non-separable volume does not survive
        assert residual.abs().max() > 1e-3


@given(dims, seeds)
def test_plain_sum_round_trips_only_pure_two_way_terms(dims, seed):
    v = _separable(*dims, seed)
    # remove grand mean and one-axis terms: v - (m_t + m_h + m_w) + 2 mu is a_th + a_tw + a_hw
    e = lambda *ax: v.mean(dim=ax, keepdim=True)  # noqa: E731
    pure = v - e(3, 4) - e(2, 4) - e(2, 3) + 2 * e(2, 3, 4)
    torch.testing.assert_close(plain_sum(project(pure)), pure, atol=1e-5, rtol=0)
    # The over-count: U_sum(P(v)) = Pi(v) + 2 mu + a_t + a_h + a_w.
    mu = e(2, 3, 4)
    over = 2 * mu + (e(3, 4) - mu) + (e(2, 4) - mu) + (e(2, 3) - mu)
    torch.testing.assert_close(plain_sum(project(v)), v + over, atol=1e-5, rtol=0)


def test_plain_sum_of_a_constant_triples_it():
    v = torch.full((1, 2, 3, 4, 5), 0.5)
    torch.testing.assert_close(plain_sum(project(v)), 3 * v)
    torch.testing.assert_close(exact(project(v)), v)


def test_exact_unprojection_of_inconsistent_planes_is_separable():
    g = _gen(1)
    planes = TriPlane(
        hw=torch.randn(2, 3, 4, 5, generator=g),
        th=torch.randn(2, 3, 6, 4, generator=g),
        tw=torch.randn(2, 3, 6, 5, generator=g),
    )
    y = exact(planes)
    np.testing.assert_allclose(_anova_projection_numpy(y.numpy()), y.numpy(), atol=1e-5)


def test_attention_pooling_starts_as_mean_pooling():
    x = torch.randn(2, 8, 3, 4, 5)
    attn = TriPlaneProjector(channels=8, pooling="attention", heads=2)
    pa, pm = attn(x), project(x)
    for name in ("hw", "th", "tw"):
        torch.testing.assert_close(getattr(pa, name), getattr(pm, name), atol=1e-6, rtol=0)


def test_attention_pool_matches_softmax_reference():
    pool = AttentionPool(channels=6, heads=3)
    with torch.no_grad():
        pool.query.normal_()
    x = torch.randn(4, 7, 6, dtype=torch.float64)
    pool = pool.double()
    out = pool(x)
    k = (x @ pool.key.weight.T + pool.key.bias).reshape(4, 7, 3, 2)
    scores = torch.einsum("bLnd,nd->bnL", k, pool.query) / np.sqrt(2)
    weights = scores.softmax(dim=-1)
    ref = torch.einsum("bnL,bLnd->bnd", weights, x.reshape(4, 7, 3, 2)).reshape(4, 6)
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, x.mean(dim=1))


def test_attention_planes_put_the_right_axis_in_the_pool():
    proj = TriPlaneProjector(channels=4, pooling="attention", heads=1)
    with torch.no_grad():
        for pool in proj.pools.values():
            pool.query.normal_(std=3.0)
    x = torch.randn(1, 4, 3, 5, 6)
    planes = proj(x)
    ref_th = proj.pools["th"](x[0, :, 1, 2, :].T.unsqueeze(0))  # t=1, h=2, pooled over w
    torch.testing.assert_close(planes.th[0, :, 1, 2], ref_th[0])
    ref_tw = proj.pools["tw"](x[0, :, 2, :, 4].T.unsqueeze(0))  # t=2, w=4, pooled over h
    torch.testing.assert_close(planes.tw[0, :, 2, 4], ref_tw[0])
    ref_hw = proj.pools["hw"](x[0, :, :, 3, 1].T.unsqueeze(0))  # h=3, w=1, pooled over t
    torch.testing.assert_close(planes.hw[0, :, 3, 1], ref_hw[0])


def test_attention_projector_save_load(tmp_path):
    proj = TriPlaneProjector(channels=4, pooling="attention", heads=2)
    with torch.no_grad():
        for p in proj.parameters():
            p.normal_()
    proj.save_pretrained(tmp_path)
    again = TriPlaneProjector.from_pretrained(tmp_path)
    x = torch.randn(1, 4, 2, 3, 3)
    torch.testing.assert_close(again(x).hw, proj(x).hw, atol=0, rtol=0)


def test_volume_mix_starts_as_identity_and_keeps_the_round_trip():
    v = _separable(1, 4, 3, 4, 5, seed=3)
    unproject = TriPlaneUnprojector(mix=VolumeMix(channels=4))
    torch.testing.assert_close(unproject(project(v)), v, atol=1e-5, rtol=0)


def test_triplane_validation_names_the_axis():
    ok = TriPlane(hw=torch.zeros(2, 3, 4, 5), th=torch.zeros(2, 3, 6, 4), tw=torch.zeros(2, 3, 6, 5))
    assert ok.shapes == {"hw": (2, 3, 4, 5), "th": (2, 3, 6, 4), "tw": (2, 3, 6, 5)}
    assert (ok.b, ok.c, ok.t, ok.h, ok.w) == (2, 3, 6, 4, 5)
    assert ok.num_tokens == 4 * 5 + 6 * 4 + 6 * 5
    with pytest.raises(ValueError, match=r"disagree on h \(4, 7\)"):
        TriPlane(hw=torch.zeros(2, 3, 4, 5), th=torch.zeros(2, 3, 6, 7), tw=torch.zeros(2, 3, 6, 5))
    with pytest.raises(ValueError, match=r"disagree on t \(6, 2\)"):
        TriPlane(hw=torch.zeros(2, 3, 4, 5), th=torch.zeros(2, 3, 6, 4), tw=torch.zeros(2, 3, 2, 5))
    with pytest.raises(ValueError, match=r"disagree on c \(3, 3, 1\)"):
        TriPlane(hw=torch.zeros(2, 3, 4, 5), th=torch.zeros(2, 3, 6, 4), tw=torch.zeros(2, 1, 6, 5))
    with pytest.raises(ValueError, match=r"TriPlane.tw must be a 4-d tensor"):
        TriPlane(hw=torch.zeros(2, 3, 4, 5), th=torch.zeros(2, 3, 6, 4), tw=torch.zeros(6, 5))


def test_triplane_map_and_to():
    p = project(torch.randn(1, 2, 3, 4, 5))
    d = p.to(torch.float64)
    assert all(x.dtype == torch.float64 for x in d)
    doubled = p.map(lambda x: 2 * x)
    torch.testing.assert_close(doubled.th, 2 * p.th)
    with pytest.raises(ValueError, match="disagree"):
        p.map(lambda x: x[:, :, :1])


def test_token_counts():
    assert triplane_tokens(16, 8, 8) == 64 + 128 + 128
    assert volume_tokens(16, 8, 8) == 1024
    with pytest.raises(ValueError, match=r"h \(0\)"):
        triplane_tokens(4, 0, 4)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="pooling"):
        TriPlaneProjector(pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="combine"):
        TriPlaneUnprojector(combine="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"channels \(6\) must be a positive multiple of heads \(4\)"):
        TriPlaneProjector(channels=6, pooling="attention", heads=4)
    with pytest.raises(ValueError, match="3 channels, projector expects 4"):
        TriPlaneProjector(channels=4, pooling="attention")(torch.randn(1, 3, 2, 2, 2))


@pytest.mark.skipif(not TYPECHECK, reason="shape checks are off (AVBLOCKS_TYPECHECK=0)")
def test_shape_check_names_the_layout():
    with pytest.raises(Exception, match="b c t h w"):
        project(torch.randn(1, 2, 3, 4))
