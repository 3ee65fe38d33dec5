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
]
