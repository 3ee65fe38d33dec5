"""Masks: dense() against naive loops of each documented rule, validation, density, caches."""

import itertools
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.attention.masks import (
    BlockWindowMask,
    FrameCausalMask,
    FullMask,
    GroupMask,
    Mask,
    RandomShiftMask,
    SlidingTileMask,
)

# ---- naive references: python loops over token pairs, written from the docstrings ------


def coords(grid):
    """(t, h, w) of every token in (t h w) order, by enumeration."""
    return list(itertools.product(*(range(g) for g in grid)))


def naive(q_len, kv_len, allowed):
    return torch.tensor([[bool(allowed(i, j)) for j in range(kv_len)] for i in range(q_len)])


def naive_block_window(grid, block, halo):
    c = coords(grid)
    return naive(
        len(c),
        len(c),
        lambda i, j: all(
            abs(c[i][a] // block[a] - c[j][a] // block[a]) <= halo[a] for a in range(3)
        ),
    )


def sta_window(q_tile, n_tiles, window):
    """Window of `window` consecutive tiles nearest to centring q_tile (ties: later start)."""
    starts = range(0, n_tiles - window + 1)
    best = min(starts, key=lambda s: (abs(s + (window - 1) / 2 - q_tile), -s))
    return set(range(best, best + window))


def naive_sliding_tile(grid, tile, window):
    c = coords(grid)
    n = [g // t for g, t in zip(grid, tile, strict=True)]
    return naive(
        len(c),
        len(c),
        lambda i, j: all(
            c[j][a] // tile[a] in sta_window(c[i][a] // tile[a], n[a], window[a]) for a in range(3)
        ),
    )


def naive_random_shift(fq, nq, fk, nk, shift, window):
    def allowed(i, j):
        qf, kf = i // nq, j // nk
        start = int(Fraction(qf * fk, fq))  # floor of the frame-rate-aligned key frame
        return kf in {(start + shift + o) % fk for o in range(window)}

    return naive(fq * nq, fk * nk, allowed)


# ---- dense() against the references -------------------------------------------------------


def test_full_and_frame_causal_dense():
    assert FullMask(3, 5).dense().all() and FullMask(3, 5).dense().shape == (3, 5)
    m = FrameCausalMask(num_frames=4, tokens_per_frame=3)
    ref = naive(12, 12, lambda i, j: j // 3 <= i // 3)
    assert torch.equal(m.dense(), ref)
    assert m.density == pytest.approx(ref.float().mean().item())
    assert not m.is_causal and FrameCausalMask(5, 1).is_causal
    assert torch.equal(FrameCausalMask(5, 1).dense(), torch.ones(5, 5, dtype=torch.bool).tril())


grids = st.tuples(*(st.sampled_from([1, 2, 3, 4, 6]) for _ in range(3)))


@st.composite
def grid_and_divisors(draw):
    grid = draw(grids)
    block = tuple(draw(st.sampled_from([d for d in range(1, g + 1) if g % d == 0])) for g in grid)
    return grid, block


@given(grid_and_divisors(), st.tuples(*(st.integers(0, 2) for _ in range(3))))
def test_block_window_dense_matches_rule(gb, halo):
    grid, block = gb
    m = BlockWindowMask(grid=grid, block=block, halo=halo)
    ref = naive_block_window(grid, block, halo)
    assert torch.equal(m.dense(), ref)
    assert m.density == pytest.approx(ref.float().mean().item())
    assert m.is_full == bool(ref.all())


def test_block_window_whole_axis_is_unrestricted():
    # block == axis on h and w: per-frame attention, i.e. a frame-diagonal mask
    m = BlockWindowMask(grid=(3, 2, 2), block=(1, 2, 2))
    assert torch.equal(m.dense(), naive(12, 12, lambda i, j: i // 4 == j // 4))


@given(
    grid_and_divisors(),
    st.tuples(*(st.integers(1, 6) for _ in range(3))),
)
def test_sliding_tile_dense_matches_rule(gt, window):
    grid, tile = gt
    window = tuple(min(w, g // t) for w, g, t in zip(window, grid, tile, strict=True))
    m = SlidingTileMask(grid=grid, tile=tile, window=window)
    ref = naive_sliding_tile(grid, tile, window)
    assert torch.equal(m.dense(), ref)
    assert m.is_full == bool(ref.all())


def test_sliding_tile_clamps_at_border():
    # 1-D view: 5 tiles of 1 token along w, window 3: token 0 sees 0..2 (window shifted in)
    m = SlidingTileMask(grid=(1, 1, 5), tile=(1, 1, 1), window=(1, 1, 3))
    d = m.dense()
    assert d[0].tolist() == [True, True, True, False, False]
    assert d[2].tolist() == [False, True, True, True, False]
    assert d[4].tolist() == [False, False, True, True, True]
    assert d.sum(dim=1).eq(3).all()  # every query sees exactly `window` tiles


@given(
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 8),
    st.integers(1, 3),
    st.integers(-10, 10),
    st.data(),
)
def test_random_shift_dense_matches_rule(fq, nq, fk, nk, shift, data):
    window = data.draw(st.integers(1, fk))
    m = RandomShiftMask(fq, nq, fk, nk, shift=shift, window=window)
    assert torch.equal(m.dense(), naive_random_shift(fq, nq, fk, nk, shift, window))
    # each query frame sees exactly `window` key frames
    assert m.dense().sum(dim=1).eq(window * nk).all()


def test_random_shift_wraps_around():
    # 2 video frames, 4 audio frames: ratio 2; frame 1 -> audio 2 + shift 1 = 3, then wraps to 0
    m = RandomShiftMask(2, 1, 4, 1, shift=1, window=2)
    assert m.dense().tolist() == [[False, True, True, False], [True, False, False, True]]


@given(st.lists(st.integers(0, 3), min_size=1, max_size=12), st.data())
def test_group_mask_ids_match_rule(q_ids, data):
    kv_ids = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=12))
    kv_ids = kv_ids + sorted(set(q_ids))  # every query group has a key
    m = GroupMask(q_ids, kv_ids)
    ref = naive(len(q_ids), len(kv_ids), lambda i, j: q_ids[i] == kv_ids[j])
    assert torch.equal(m.dense(), ref)


def test_group_mask_uniform_cross_lengths():
    m = GroupMask.uniform(num_groups=3, q_group_size=2, kv_group_size=5)
    assert (m.q_len, m.kv_len) == (6, 15)
    assert torch.equal(m.dense(), naive(6, 15, lambda i, j: i // 2 == j // 5))
    assert m.density == pytest.approx(1 / 3)
    # the arithmetic mask_mod and the id-table form agree
    ids = GroupMask(torch.arange(3).repeat_interleave(2), torch.arange(3).repeat_interleave(5))
    assert torch.equal(ids.dense(), m.dense())


# ---- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: FullMask(0, 3), r"q_len \(0\)"),
        (lambda: FrameCausalMask(3, -1), r"tokens_per_frame \(-1\)"),
        (
            lambda: BlockWindowMask((4, 4, 4), (3, 1, 1)),
            r"block\[t\] \(3\) must divide grid\[t\] \(4\)",
        ),
        (lambda: BlockWindowMask((4, 4, 4), (1, 1, 1), (0, -1, 0)), r"halo\[h\] \(-1\)"),
        (lambda: BlockWindowMask((4, 4), (1, 1), (0, 0)), r"grid"),
        (lambda: SlidingTileMask((4, 4, 4), (2, 2, 2), (3, 1, 1)), r"window\[t\] \(3\)"),
        (lambda: SlidingTileMask((4, 4, 6), (2, 2, 4), (1, 1, 1)), r"tile\[w\] \(4\)"),
        (lambda: GroupMask([0, 1, 2], [0, 1]), r"query groups \[2\] have no keys"),
        (lambda: GroupMask(3, 4), r"GroupMask.uniform"),
        (lambda: GroupMask([0.5], [0.5]), r"integer group ids"),
        (lambda: GroupMask.uniform(0, 1, 1), r"num_groups \(0\)"),
        (
            lambda: RandomShiftMask(4, 2, 4, 2, shift=0, window=5),
            r"window \(5\).*num_kv_frames \(4\)",
        ),
        (lambda: RandomShiftMask(4, 2, 4, 2, shift=1.5, window=1), r"shift \(1.5\)"),
    ],
)
def test_invalid_arguments_raise_naming_values(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# ---- value semantics, density, block masks -----------------------------------------------


def test_equal_masks_compare_and_hash_equal():
    a, b = BlockWindowMask((2, 4, 4), (1, 2, 2)), BlockWindowMask((2, 4, 4), (1, 2, 2))
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != BlockWindowMask((2, 4, 4), (1, 2, 2), (0, 1, 0))
    assert RandomShiftMask(2, 1, 4, 1, shift=5, window=1) == RandomShiftMask(2, 1, 4, 1, shift=1)
    assert GroupMask.uniform(2, 3, 3) != FrameCausalMask(2, 3)
    # equal masks share the cached dense matrix
    assert a.dense() is b.dense()


def test_mask_without_mask_mod_only_needs_dense():
    class Dense(Mask):
        q_len, kv_len = 2, 2

        def key(self):
            return ("Dense",)

        def dense(self, device=None):
            return torch.eye(2, dtype=torch.bool)

    with pytest.raises(NotImplementedError, match="mask_mod"):
        Mask.dense(Dense())
    assert Dense().density == 0.5


@pytest.mark.parametrize(
    "mask",
    [
        FrameCausalMask(5, 7),
        BlockWindowMask((4, 6, 6), (2, 3, 3), (0, 1, 0)),
        SlidingTileMask((4, 6, 6), (1, 2, 3), (3, 1, 1)),
        GroupMask.uniform(3, 11, 7),
        RandomShiftMask(5, 6, 8, 3, shift=3, window=2),
    ],
    ids=lambda m: type(m).__name__,
)
@pytest.mark.parametrize("block_size", [8, 16])
def test_block_mask_tiles_match_dense(mask, block_size):
    """Skipped tiles hold no allowed pair, 'full' tiles only allowed pairs (ragged edges too)."""
    dense = mask.dense()
    bm = mask.block_mask(block_size)
    nqb, nkb = -(-mask.q_len // block_size), -(-mask.kv_len // block_size)
    present = torch.zeros(nqb, nkb, dtype=torch.bool)
    full = torch.zeros(nqb, nkb, dtype=torch.bool)
    for i in range(nqb):
        n, idx = int(bm.kv_num_blocks[0, 0, i]), bm.kv_indices[0, 0, i]
        present[i, idx[:n].long()] = True
        n, idx = int(bm.full_kv_num_blocks[0, 0, i]), bm.full_kv_indices[0, 0, i]
        full[i, idx[:n].long()] = True
        present[i, idx[:n].long()] = True
    for i in range(nqb):
        for j in range(nkb):
            tile = dense[
                i * block_size : (i + 1) * block_size, j * block_size : (j + 1) * block_size
            ]
            assert present[i, j] == bool(tile.any())
            assert full[i, j] == bool(tile.all())
    assert mask.density == pytest.approx(dense.float().mean().item())


@given(grid_and_divisors(), st.tuples(*(st.integers(1, 6) for _ in range(3))))
def test_sliding_tile_tiled_order_is_the_raster_rule_permuted(gt, window):
    grid, tile = gt
    window = tuple(min(w, g // t) for w, g, t in zip(window, grid, tile, strict=True))
    raster = SlidingTileMask(grid=grid, tile=tile, window=window)
    tiled = SlidingTileMask(grid=grid, tile=tile, window=window, token_order="tiled")
    perm = tiled.permutation()
    assert sorted(perm.tolist()) == list(range(raster.q_len))
    assert torch.equal(tiled.dense(), raster.dense()[perm][:, perm])
    assert torch.equal(perm[tiled.inverse_permutation()], torch.arange(raster.q_len))
    # tiles are contiguous: the first tile's tokens are exactly those with coords < tile
    c = coords(grid)
    first = {c[i] for i in perm[: tile[0] * tile[1] * tile[2]].tolist()}
    assert first == {x for x in c if all(x[a] < tile[a] for a in range(3))}
    assert tiled != raster


def test_sliding_tile_token_order_validated():
    with pytest.raises(ValueError, match=r"token_order \('zigzag'\)"):
        SlidingTileMask((2, 2, 2), (1, 1, 1), (1, 1, 1), token_order="zigzag")
