"""Positional encodings: sin-cos against direct numpy formulas; rotary is a rotation whose
q.k scores depend only on relative positions."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.attention import attend
from avblocks.attention.positional import (
    apply_rotary,
    dit_sincos_2d,
    grid_coordinates,
    rotary_angles,
    rotary_grid,
    sincos_1d,
    sincos_2d,
    sincos_3d,
    sincos_embedding,
)


def np_sincos_1d(dim, pos):
    """MAE/DiT formula: omega_i = 1 / 10000^(i / (dim/2)); [sin(p*omega), cos(p*omega)]."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", np.asarray(pos, dtype=np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def test_sincos_1d_matches_formula():
    np.testing.assert_allclose(sincos_1d(16, 7).numpy(), np_sincos_1d(16, np.arange(7)), atol=1e-6)


def test_sincos_2d_and_3d_split_channels_by_axis_in_order():
    h, w, dim = 3, 5, 8
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    expect = np.concatenate([np_sincos_1d(4, rows), np_sincos_1d(4, cols)], axis=1)
    np.testing.assert_allclose(sincos_2d(dim, h, w).numpy(), expect, atol=1e-6)
    t = 2
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    expect = np.concatenate([np_sincos_1d(4, a) for a in (tt, hh, ww)], axis=1)
    np.testing.assert_allclose(sincos_3d(12, t, h, w).numpy(), expect, atol=1e-6)


def test_dit_layout_matches_mae_code_path():
    """MAE's get_2d_sincos_pos_embed: meshgrid(w, h), first half from grid[0] (= w)."""
    g, dim = 4, 16
    grid = np.meshgrid(np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32))
    expect = np.concatenate([np_sincos_1d(dim // 2, grid[0]), np_sincos_1d(dim // 2, grid[1])], 1)
    np.testing.assert_allclose(dit_sincos_2d(dim, g).numpy(), expect, atol=1e-6)


def test_dit_layout_on_a_rectangular_grid():
    """(rows, cols): tokens row-major, first half the column coordinate, second half the row."""
    rows, cols, dim = 3, 5, 8
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    expect = np.concatenate([np_sincos_1d(dim // 2, c), np_sincos_1d(dim // 2, r)], axis=1)
    np.testing.assert_allclose(dit_sincos_2d(dim, (rows, cols)).numpy(), expect, atol=1e-6)
    np.testing.assert_array_equal(dit_sincos_2d(dim, (4, 4)).numpy(), dit_sincos_2d(dim, 4).numpy())


@pytest.mark.parametrize("dim, grid", [(10, (2, 2, 2)), (6, (2, 2)), (3, (4,)), (0, (4,))], ids=str)
def test_sincos_dim_must_split_evenly(dim, grid):
    with pytest.raises(ValueError, match=rf"dim \({dim}\) must be a positive multiple"):
        sincos_embedding(dim, grid)


def test_bad_grids_raise():
    with pytest.raises(ValueError, match="grid"):
        sincos_embedding(8, (2, 0))
    with pytest.raises(ValueError, match="grid"):
        rotary_grid(8, (1, 2, 3, 4))


def test_grid_coordinates_are_row_major():
    c = grid_coordinates((2, 3, 4))
    assert c.shape == (24, 3)
    assert c[5].tolist() == [0, 1, 1] and c[13].tolist() == [1, 0, 1]


# ---- rotary ---------------------------------------------------------------------------------


def test_rotary_matches_complex_multiplication_1d():
    d, n = 8, 6
    x = torch.randn(1, 2, n, d)
    out = apply_rotary(x, rotary_grid(d, (n,)))
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    theta = pos * 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    xc = torch.view_as_complex(x.double().reshape(1, 2, n, d // 2, 2).contiguous())
    expect = torch.view_as_real(xc * torch.polar(torch.ones_like(theta), theta)).reshape(x.shape)
    torch.testing.assert_close(out.double(), expect, atol=1e-5, rtol=1e-5)


def test_rotary_axis_chunks_follow_split():
    # 3-D grid, split (4, 2, 2): chunk 0 only depends on t, chunk 1 on h, chunk 2 on w
    a = rotary_grid(8, (2, 3, 4), split=(4, 2, 2))
    assert a.shape == (24, 4)
    c = grid_coordinates((2, 3, 4))
    torch.testing.assert_close(a[:, 0], c[:, 0])
    torch.testing.assert_close(a[:, 1], c[:, 0] * 10000.0 ** (-2 / 4))
    torch.testing.assert_close(a[:, 2], c[:, 1])
    torch.testing.assert_close(a[:, 3], c[:, 2])


@pytest.mark.parametrize("grid", [(7,), (3, 4), (2, 3, 4)], ids=str)
def test_rotary_preserves_norms(grid):
    x = torch.randn(2, 3, int(np.prod(grid)), 12)
    y = apply_rotary(x, rotary_grid(12, grid))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    assert not torch.allclose(y, x)  # and does rotate


@given(
    st.integers(1, 3),
    st.lists(st.integers(-50, 50), min_size=3, max_size=3),
    st.lists(st.integers(0, 20), min_size=6, max_size=6),
)
def test_rotary_scores_depend_only_on_relative_position(axes, offset, positions):
    d = 12
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    pq = torch.tensor(positions[:axes], dtype=torch.float32)[None]
    pk = torch.tensor(positions[3 : 3 + axes], dtype=torch.float32)[None]
    off = torch.tensor(offset[:axes], dtype=torch.float32)[None]

    def score(p1, p2):
        rq = apply_rotary(q.float()[None, None, None], rotary_angles(d, p1))
        rk = apply_rotary(k.float()[None, None, None], rotary_angles(d, p2))
        return (rq * rk).sum().item()

    assert score(pq + off, pk + off) == pytest.approx(score(pq, pk), abs=1e-4)


def test_rotary_breaks_permutation_equivariance_only_through_positions():
    """With rotary, attention depends on order; moving q and its angles together does not."""
    n, d = 12, 8
    q, k, v = torch.randn(1, 2, n, d), torch.randn(1, 2, n, d), torch.randn(1, 2, n, d)
    f = rotary_grid(d, (n,))
    out = attend(apply_rotary(q, f), apply_rotary(k, f), v, backend="math")
    p = torch.randperm(n)
    moved = attend(apply_rotary(q[:, :, p], f[p]), apply_rotary(k, f), v, backend="math")
    torch.testing.assert_close(moved, out[:, :, p])
    unmoved = attend(apply_rotary(q[:, :, p], f), apply_rotary(k, f), v, backend="math")
    assert not torch.allclose(unmoved, out[:, :, p], atol=1e-4)


def test_rotary_validation_and_dtype():
    with pytest.raises(
        ValueError, match=r"head_dim \(10\) must be divisible by 2 \* number of axes \(6\)"
    ):
        rotary_grid(10, (2, 2, 2))
    with pytest.raises(ValueError, match=r"split \(\(4, 3, 3\)\)"):
        rotary_grid(10, (2, 2, 2), split=(4, 3, 3))
    rotary_grid(10, (2, 2, 2), split=(4, 4, 2))
    x = torch.randn(1, 1, 8, 8, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="head dim 8"):
        apply_rotary(x, rotary_grid(4, (8,)))
    assert apply_rotary(x, rotary_grid(8, (8,))).dtype == torch.bfloat16
    zero = torch.zeros(8, 4)
    assert torch.equal(apply_rotary(x, zero), x)  # zero angle is the identity
