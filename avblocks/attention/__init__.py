"""Attention: one entry point (:func:`attend`), its backends, masks and positional encodings."""

from avblocks.attention.dispatch import (
    BACKENDS,
    Backend,
    UnsupportedAttentionError,
    attend,
    attention_backend,
    get_backend,
    register_backend,
)
from avblocks.attention.masks import (
    BlockWindowMask,
    FrameCausalMask,
    FullMask,
    GroupMask,
    Mask,
    RandomShiftMask,
    SlidingTileMask,
)
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

__all__ = [
    "attend",
    "attention_backend",
    "get_backend",
    "register_backend",
    "Backend",
    "BACKENDS",
    "UnsupportedAttentionError",
    "Mask",
    "FullMask",
    "FrameCausalMask",
    "BlockWindowMask",
    "GroupMask",
    "SlidingTileMask",
    "RandomShiftMask",
    "grid_coordinates",
    "sincos_embedding",
    "sincos_1d",
    "sincos_2d",
    "sincos_3d",
    "dit_sincos_2d",
    "rotary_angles",
    "rotary_grid",
    "apply_rotary",
]

# Attention blocks (residual, zero-initialised at the output; see docs/attention_blocks.md).
from avblocks.attention.biblock import BiBlockCrossAttention, BlockBandMask  # noqa: E402
from avblocks.attention.gcm import GCMAttention  # noqa: E402
from avblocks.attention.mt_self import MTSelfAttention, PooledCausalMask  # noqa: E402
from avblocks.attention.projections import (  # noqa: E402
    BidirectionalCrossAttention,
    MultiHeadAttention,
)
from avblocks.attention.spatiotemporal import SpatialAttention, TemporalAttention  # noqa: E402

__all__ += [
    "MultiHeadAttention",
    "BidirectionalCrossAttention",
    "SpatialAttention",
    "TemporalAttention",
    "MTSelfAttention",
    "PooledCausalMask",
    "GCMAttention",
    "BiBlockCrossAttention",
    "BlockBandMask",
]

# Sparse attention for long videos; importing it registers the "sliding_tile" backend.
from avblocks.attention.sparse_video import (  # noqa: E402
    SlidingTileAttention,
    SlidingTileBackend,
    SparseStats,
    SparseVideoAttention,
    SparseVideoBackend,
    block_diagonal_attention,
    sliding_tile_attention,
)

__all__ += [
    "SlidingTileAttention",
    "SparseVideoAttention",
    "SlidingTileBackend",
    "SparseVideoBackend",
    "sliding_tile_attention",
    "block_diagonal_attention",
    "SparseStats",
]
