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
