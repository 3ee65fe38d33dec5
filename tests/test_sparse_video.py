"""Sparse attention (avblocks.attention.sparse_video) against the math backend with masks:
sliding tiles, SVG's block-diagonal patterns and head classification, the controllers."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from avblocks.attention.dispatch import UnsupportedAttentionError, attend
from avblocks.attention.masks import BlockWindowMask, FrameCausalMask, SlidingTileMask
from avblocks.attention.sparse_video import (
    SlidingTileAttention,
    SlidingTileBackend,
    SparseVideoAttention,
    SparseVideoBackend,
    block_diagonal_attention,
    sliding_tile_attention,
)
from avblocks.dit.blocks import DiTBlock
from avblocks.dit.stdit import STDiT


def _qkv(n: int, hq: int = 2, hk: int = 2, b: int = 2, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, hq, n, d, generator=g), torch.randn(b, hk, n, d, generator=g),
            torch.randn(b, hk, n, d, generator=g))


STA_CASES = [
    # grid, tile, window, order, heads (q, kv)
    ((1, 8, 8), (1, 2, 2), (1, 1, 1), "raster", (2, 2)),
    ((1, 8, 8), (1, 2, 2), (1, 3, 3), "raster", (2, 2)),  # clamped at the borders
    ((2, 6, 4), (1, 3, 2), (2, 1, 2), "tiled", (4, 2)),  # grouped-query heads
    ((4, 4, 4), (2, 2, 2), (1, 2, 1), "raster", (2, 1)),
]


@pytest.mark.parametrize("grid,tile,window,order,heads", STA_CASES)
def test_sliding_tile_attention_equals_masked_math(grid, tile, window, order, heads):
    mask = SlidingTileMask(grid, tile, window, token_order=order)
    q, k, v = _qkv(math.prod(grid), *heads)
    reference = attend(q, k, v, mask=mask, backend="math")
    torch.testing.assert_close(sliding_tile_attention(q, k, v, mask), reference)
    torch.testing.assert_close(attend(q, k, v, mask=mask, backend="sliding_tile"), reference)


def test_sliding_tile_at_full_density_equals_dense_attention():
    grid, tile = (2, 4, 6), (1, 2, 3)
    mask = SlidingTileMask(grid, tile, (2, 2, 2))
    assert mask.is_full
    q, k, v = _qkv(48)
    dense = attend(q, k, v, backend="math")
    torch.testing.assert_close(sliding_tile_attention(q, k, v, mask), dense)
    torch.testing.assert_close(attend(q, k, v, mask=mask, backend=SlidingTileBackend()), dense)


def test_sliding_tile_backend_refuses_other_masks():
    q, k, v = _qkv(8)
    with pytest.raises(UnsupportedAttentionError, match="SlidingTileMask"):
        attend(q, k, v, mask=FrameCausalMask(2, 4), backend="sliding_tile")


def _video_mask(grid, block, extra: int) -> torch.Tensor:
    """Reference dense mask: video queries see their block + the extra keys."""
    n = math.prod(grid)
    video = BlockWindowMask(grid, block).dense()
    return torch.cat([video, torch.ones(n, extra, dtype=torch.bool)], dim=1)


def _masked_math(q, k, v, allowed):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v


@pytest.mark.parametrize("block", [(1, 3, 4), (2, 1, 1), (1, 1, 2), (2, 3, 4)])
@pytest.mark.parametrize("extra", [0, 3])
def test_block_diagonal_pattern_equals_masked_reference(block, extra):
    grid = (2, 3, 4)
    n = math.prod(grid)
    q, k, v = _qkv(n + extra)
    out = block_diagonal_attention(q[:, :, :n], k, v, grid, block, extra)
    torch.testing.assert_close(out, _masked_math(q[:, :, :n], k, v, _video_mask(grid, block, extra)))
    if block == grid:  # full density: dense attention itself
        torch.testing.assert_close(out, attend(q, k, v, backend="math")[:, :, :n])


@pytest.mark.parametrize("extra", [0, 2])
def test_svg_backend_with_both_patterns_at_full_density_equals_dense(extra):
    grid = (3, 2, 2)
    q, k, v = _qkv(math.prod(grid) + extra, hq=4, hk=2)
    backend = SparseVideoBackend(grid=grid, spatial_block=grid, temporal_block=grid,
                                 extra_tokens=extra, sample_rows=5)
    torch.testing.assert_close(attend(q, k, v, backend=backend), attend(q, k, v, backend="math"))


def _structured_heads(grid):
    """Head 0 attends within its frame, head 1 along its position: one-hot keys scaled up."""
    t, h, w = grid
    n = t * h * w
    frame = torch.arange(n) // (h * w)
    position = torch.arange(n) % (h * w)
    d = max(t, h * w)
    q = torch.zeros(1, 2, n, d)
    q[0, 0, torch.arange(n), frame] = 6.0
    q[0, 1, torch.arange(n), position] = 6.0
    k = q.clone()
    v = torch.randn(1, 2, n, d, generator=torch.Generator().manual_seed(1))
    return q, k, v


def test_svg_classifies_heads_and_runs_each_with_its_pattern():
    grid = (4, 2, 3)
    q, k, v = _structured_heads(grid)
    backend = SparseVideoBackend(grid=grid, sample_rows=8)
    temporal = backend.classify(q, k, v, 1 / math.sqrt(q.shape[-1]))
    assert temporal.tolist() == [False, True]
    out = attend(q, k, v, backend=backend)
    spatial_ref = _masked_math(q, k, v, _video_mask(grid, (1, 2, 3), 0))
    temporal_ref = _masked_math(q, k, v, _video_mask(grid, (4, 1, 1), 0))
    torch.testing.assert_close(out[:, 0], spatial_ref[:, 0])
    torch.testing.assert_close(out[:, 1], temporal_ref[:, 1])


def test_svg_backend_refuses_masks_and_wrong_lengths():
    backend = SparseVideoBackend(grid=(2, 2, 2))
    q, k, v = _qkv(8)
    with pytest.raises(UnsupportedAttentionError, match="cannot honour"):
        attend(q, k, v, mask=FrameCausalMask(2, 4), backend=backend)
    q, k, v = _qkv(9)
    with pytest.raises(UnsupportedAttentionError, match="grid"):
        attend(q, k, v, backend=backend)
    with pytest.raises(ValueError, match="divide"):
        SparseVideoBackend(grid=(2, 2, 2), spatial_block=(1, 3, 2))


class _VideoDiT(nn.Module):
    """DiT blocks over ``t h w`` video tokens (full 3D attention)."""

    def __init__(self, depth: int = 3, d: int = 16):
        super().__init__()
        self.blocks = nn.ModuleList(DiTBlock(hidden_size=d, num_heads=2) for _ in range(depth))
        with torch.no_grad():
            for block in self.blocks:
                block.adaLN_modulation[1].weight.normal_(0, 0.2)

    def forward(self, x, c):
        for block in self.blocks:
            x = block(x, c)
        return x


@torch.no_grad()
def test_svg_controller_keeps_first_steps_and_layers_dense():
    torch.manual_seed(0)
    model = _VideoDiT().eval()
    grid = (2, 3, 4)
    x, c = torch.randn(2, 24, 16), torch.randn(2, 16)
    dense = model(x, c)
    with SparseVideoAttention(model, grid=grid, dense_layers=1, dense_steps=1) as sparse:
        first = model(x, c)
        second = model(x, c)
        stats = sparse.stats
    assert torch.equal(first, dense)  # warm-up step: dense everywhere
    assert not torch.allclose(second, dense)
    assert (stats.steps, stats.dense_calls, stats.sparse_calls) == (2, 3 + 1, 2)
    assert stats.spatial_heads + stats.temporal_heads == 2 * 2 and len(stats.choices) == 2
    assert torch.equal(model(x, c), dense)  # detached on exit
    with SparseVideoAttention(model, grid=grid, spatial_block=grid, temporal_block=grid,
                              dense_layers=0, dense_steps=0):
        torch.testing.assert_close(model(x, c), dense)


def _stdit() -> STDiT:
    torch.manual_seed(0)
    model = STDiT(in_channels=2, side=16, frames=6, patch=2, hidden_size=32, depth=2,
                  num_heads=2, num_classes=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer" in name:
                p.normal_(0, 0.05)
    return model.eval()


@torch.no_grad()
def test_sliding_tile_on_stdit_spatial_attention():
    model = _stdit()
    x, t, y = torch.randn(2, 2, 6, 16, 16), torch.rand(2), torch.tensor([0, 1])
    dense = model(x, t, y)
    with SlidingTileAttention(model, tile=2, window=4, dense_layers=0, dense_steps=0):
        torch.testing.assert_close(model(x, t, y), dense)  # window = all tiles: dense
    with SlidingTileAttention(model, tile=2, window=1, dense_layers=1, dense_steps=1) as sta:
        warm = model(x, t, y)
        sparse = model(x, t, y)
        assert sta.density == pytest.approx(16 / 64 / 4)
        assert (sta.stats.dense_calls, sta.stats.sparse_calls) == (2 + 1, 1)
    assert torch.equal(warm, dense)
    assert not torch.allclose(sparse, dense)
    # the sparse step is the model with the mask passed to its second block's spatial attention
    masks = [None, sta.mask]
    tokens = model.x_embedder(x.transpose(1, 2).flatten(0, 1)).unflatten(0, (2, 6))
    tokens = tokens + model.pos_embed + model.plane_embed[None, :, None, :]
    c = model.condition(t, y)
    for block, mask in zip(model.blocks, masks, strict=True):
        with torch.no_grad():
            from avblocks.attention.dispatch import attention_backend

            with attention_backend("math"):
                tokens = block(tokens, c, spatial_mask=mask)
    out = model.final_layer(tokens, c)
    reference = out.reshape(2, 6, 8, 8, 2, 2, 2).permute(0, 6, 1, 2, 4, 3, 5).reshape(x.shape)
    torch.testing.assert_close(sparse, reference, rtol=1e-4, atol=1e-5)


@st.composite
def _sta_configs(draw):
    grid, tile, window = [], [], []
    for _ in range(3):
        ti = draw(st.integers(1, 3))
        n = draw(st.integers(1, 3))
        grid.append(ti * n)
        tile.append(ti)
        window.append(draw(st.integers(1, n)))
    order = draw(st.sampled_from(["raster", "tiled"]))
    return tuple(grid), tuple(tile), tuple(window), order


@given(_sta_configs())
def test_sliding_tile_equals_masked_math_for_any_tiling(config):
    grid, tile, window, order = config
    mask = SlidingTileMask(grid, tile, window, token_order=order)
    q, k, v = _qkv(math.prod(grid), b=1, d=4)
    torch.testing.assert_close(sliding_tile_attention(q, k, v, mask),
                               attend(q, k, v, mask=mask, backend="math"))


@torch.no_grad()
def test_sliding_tile_on_row_tokens_tiles_the_rows_only():
    """The demo's (1, 16) patches: a (16, 1) token grid per plane. The one-column axis is one
    tile (it was refused before: tile 2 does not divide 1), the rows are tiled."""
    model = STDiT(in_channels=2, side=16, patch=(1, 16), hidden_size=32, depth=2, num_heads=2, num_classes=3).eval()
    with SlidingTileAttention(model, tile=2, window=2, dense_layers=0, dense_steps=0) as sta:
        model(torch.randn(2, 2, 6, 16, 16), torch.rand(2), torch.tensor([0, 1]))
    assert sta.mask.tile == (1, 2, 1) and sta.mask.window == (1, 2, 1)
    assert sta.density == pytest.approx(4 / 16) and sta.stats.sparse_calls == 2
