"""Rotary positions on timestamps in seconds, shared by streams of different rates.

Two token streams (video at its frame rate, audio at its latent rate) meet by *time*, not by
index: each token carries the time in seconds it stands for (for a token that covers a span,
the span's centre), and :class:`TimeRotary` rotates its query / key channel pairs by

    angle_i = (seconds * scale) * base ** (-2 i / head_dim),    i = 0 .. head_dim / 2 - 1

(:func:`avblocks.attention.positional.rotary_angles` on one axis, interleaved pairs). There is
**one frequency table** for every stream, so a video token and an audio token at the same
instant get the same phase, and the score ``q . k`` of two rotated tokens depends on their
times only through ``t_q - t_k`` (shift both streams by the same time: scores unchanged).

``scale`` (rotary units per second) is the rate scale: with ``scale`` = the video's latent
frame rate, one video frame is one rotary unit and an audio token index ``j`` at rate
``r_a`` sits at ``j * r_v / r_a`` units: Ovi's "audio positions scaled to the video's latent
rate", and LTX-2's positions in seconds, in one formula. The slowest pair turns once in
``2 pi base^(1 - 2/head_dim) / scale`` seconds: keep it longer than the clips you use.

Angles are computed in float32 from the times (float32): a shift of ``T`` seconds moves
``q . k`` by about ``1e-7 * T * scale`` radians of rounding, nothing more.
"""

from dataclasses import dataclass

import torch

from avblocks.attention.positional import apply_rotary, rotary_angles
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["TimeRotary"]

Seconds = Float[Tensor, "n"]  # module-level: a one-word shape in an annotation reads as a name to pyflakes


@dataclass(frozen=True)
class TimeRotary:
    """RoPE on times in seconds (module doc). ``scale``: rotary units per second (> 0);
    ``base``: the frequency base (10000, RoPE's)."""

    scale: float = 1.0
    base: float = 10000.0

    def __post_init__(self) -> None:
        if not self.scale > 0 or not self.base > 1:
            raise ValueError(f"TimeRotary needs scale > 0 and base > 1, got scale={self.scale}, "
                             f"base={self.base}")

    @shapecheck
    def angles(self, head_dim: int, seconds: Seconds) -> Float[Tensor, "n half"]:
        """Rotation angles (radians, float32) of tokens at ``seconds``; ``half = head_dim / 2``."""
        if head_dim < 2 or head_dim % 2:
            raise ValueError(f"head_dim ({head_dim}) must be even and >= 2 for rotary positions")
        positions = (seconds.to(torch.float32) * self.scale)[:, None]
        return rotary_angles(head_dim, positions, base=self.base)

    @shapecheck
    def __call__(self, x: Float[Tensor, "b h n d"], seconds: Seconds) -> Float[Tensor, "b h n d"]:
        """``x`` (queries or keys, heads on dim 1) rotated to the times of its tokens."""
        return apply_rotary(x, self.angles(x.shape[-1], seconds).to(x.device))
