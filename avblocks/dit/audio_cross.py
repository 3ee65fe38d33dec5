"""Per-frame audio cross-attention and the ST-DiT block that uses it (READ's audio injection).

:class:`FrameAudioCrossAttention`: the tokens of video frame ``t`` (queries, ``b t n d``)
attend to the audio codes of frames ``t - window .. t + window`` (keys / values, ``b t da``,
one code per frame as :class:`avblocks.audio.frame_codes.FrameAudioCodec` makes them).
Choices:

- the locality is a mask, not a gather: queries ``(t n)`` frame-major, keys ``t``, and
  :class:`avblocks.attention.biblock.BlockBandMask` (``q_block_len = n``, ``kv_block_len = 1``,
  ``halo = window``) through the one entry point :func:`avblocks.attention.attend`, so every
  backend applies. At the clip edges a frame simply has fewer codes in its window (no
  padding codes); every frame always has its own code, so no softmax row is empty;
- the audio codes are LayerNorm-ed (with affine) before the key / value Linears, since their
  scale is whatever the audio encoder produced; no positional terms (the mask carries time);
- ``q``, ``kv`` (fused, ``2 d`` outputs split ``(two h e)``) and ``proj`` are xavier-uniform
  with zero bias, as the DiT attention. The branch is made zero at init by the block's gate.

:class:`AudioSTDiTBlock` subclasses :class:`avblocks.dit.blocks.STDiTBlock` (spatial,
temporal, MLP branches unchanged, same parameter names) and adds a fourth residual branch
*after* them::

    x = STDiTBlock(x, c)
    x = x + gate_cross * cross(modulate(norm_cross(x), shift_cross, scale_cross), audio)

with its own adaLN-Zero Linear ``adaLN_cross`` (3 vectors per frame, zero-initialised: the
fresh branch is exactly 0, so a trained ST-DiT block loads into it strictly-but-for the new
keys and computes the same output, see :meth:`AudioSTDiTBlock.load_stdit_block`). A separate
Linear rather than 12 rows in ``adaLN_modulation`` keeps that module's 9-vector layout, which
the step caches (:mod:`avblocks.dit.cache`) and the DiT weight loader rely on.

Step caches call ``block(tokens, c)``: a model binds the audio codes for the length of one
forward with :class:`AudioBinding` (``with binding.bind(codes): model.forward_blocks(...)``),
and a block called without ``audio`` reads them from there.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from einops import rearrange
from torch import nn

from avblocks.attention.biblock import BlockBandMask
from avblocks.attention.dispatch import attend
from avblocks.attention.masks import Mask
from avblocks.dit.blocks import STDiTBlock
from avblocks.dit.modulation import AdaLNZero, modulate, to_tokens
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["AudioBinding", "FrameAudioCrossAttention", "AudioSTDiTBlock"]


def _xavier(linear: nn.Linear) -> None:
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


class AudioBinding:
    """The audio codes of the forward call in progress, for blocks called as ``block(x, c)``."""

    def __init__(self) -> None:
        self._codes: Tensor | None = None

    @contextmanager
    def bind(self, codes: Tensor) -> Iterator[None]:
        """Make ``codes`` the current audio until the ``with`` block ends (nests)."""
        previous, self._codes = self._codes, codes
        try:
            yield
        finally:
            self._codes = previous

    def get(self) -> Tensor:
        if self._codes is None:
            raise ValueError(
                "no audio codes: pass audio= to the block or call it inside AudioBinding.bind(codes)"
            )
        return self._codes


class FrameAudioCrossAttention(nn.Module):
    """Video tokens ``b t n d`` attend to the audio codes ``b t da`` of frames within ``window``.

    Args:
        hidden_size: token width ``d``.
        audio_dim: code width ``da``.
        num_heads: heads (must divide ``hidden_size``).
        window: frames each side a video frame may hear (0: its own frame only).
    """

    def __init__(self, *, hidden_size: int, audio_dim: int, num_heads: int,
                 window: int = 0) -> None:
        super().__init__()
        if hidden_size < 1 or audio_dim < 1 or num_heads < 1:
            raise ValueError(
                f"hidden_size ({hidden_size}), audio_dim ({audio_dim}) and num_heads "
                f"({num_heads}) must be >= 1"
            )
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"window ({window!r}) must be an integer >= 0")
        self.num_heads, self.window, self.audio_dim = num_heads, window, audio_dim
        self.norm_audio = nn.LayerNorm(audio_dim)
        self.q = nn.Linear(hidden_size, hidden_size)
        self.kv = nn.Linear(audio_dim, 2 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        for linear in (self.q, self.kv, self.proj):
            _xavier(linear)

    def mask(self, frames: int, tokens_per_frame: int) -> Mask:
        """The ``(t n) x t`` band: query frame ``i`` sees code ``j`` iff ``|i - j| <= window``."""
        return BlockBandMask(frames, tokens_per_frame, 1, self.window)

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b t n d"], audio: Float[Tensor, "b t da"]
    ) -> Float[Tensor, "b t n d"]:
        if audio.shape[-1] != self.audio_dim:
            raise ValueError(f"audio codes have width {audio.shape[-1]}, expected {self.audio_dim}")
        t, n = x.shape[1], x.shape[2]
        q = rearrange(self.q(x), "b t n (h e) -> b h (t n) e", h=self.num_heads)
        k, v = rearrange(self.kv(self.norm_audio(audio).to(x.dtype)),
                         "b t (two h e) -> two b h t e", two=2, h=self.num_heads)
        out = attend(q, k, v, mask=self.mask(t, n))
        return self.proj(rearrange(out, "b h (t n) e -> b t n (h e)", t=t))


class AudioSTDiTBlock(STDiTBlock):
    """:class:`STDiTBlock` plus a zero-init, adaLN-gated per-frame audio cross-attention branch.

    See the module docstring. ``forward(x b t n d, c b d | b t d, audio b t da = None)``; with
    ``audio=None`` the codes come from ``binding`` (:class:`AudioBinding`).

    Args:
        hidden_size, num_heads, mlp_ratio: as :class:`STDiTBlock`.
        audio_dim: width of the audio codes.
        window: audio frames each side that a video frame attends to.
        binding: where codes are read from when ``audio`` is not passed (shared by a model's
            blocks); ``None``: a private one (then ``audio`` must be passed).
    """

    def __init__(self, *, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0,
                 audio_dim: int = 32, window: int = 0, binding: AudioBinding | None = None) -> None:
        super().__init__(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.norm_cross = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.cross_attn = FrameAudioCrossAttention(
            hidden_size=hidden_size, audio_dim=audio_dim, num_heads=num_heads, window=window)
        self.adaLN_cross = AdaLNZero(hidden_size=hidden_size, num_vectors=3)
        self.binding = binding if binding is not None else AudioBinding()

    @shapecheck
    def forward(
        self,
        x: Float[Tensor, "b t n d"],
        c: Float[Tensor, "b *tc d"],
        audio: Float[Tensor, "b t da"] | None = None,
        spatial_mask: Mask | None = None,
        temporal_mask: Mask | None = None,
    ) -> Float[Tensor, "b t n d"]:
        audio = self.binding.get() if audio is None else audio
        x = super().forward(x, c, spatial_mask=spatial_mask, temporal_mask=temporal_mask)
        if c.ndim == 2:
            c = c.unsqueeze(1).expand(x.shape[0], x.shape[1], c.shape[-1])
        shift, scale, gate = (to_tokens(v, x) for v in self.adaLN_cross(c))
        return x + gate * self.cross_attn(modulate(self.norm_cross(x), shift, scale), audio)

    def load_stdit_block(self, block: STDiTBlock) -> None:
        """Copy a trained :class:`STDiTBlock`'s weights; the audio branch keeps its zero gate,
        so the result computes exactly what ``block`` computes."""
        missing, unexpected = self.load_state_dict(block.state_dict(), strict=False)
        extra = [k for k in missing if not k.startswith(("cross_attn.", "adaLN_cross."))]
        if extra or unexpected:
            raise ValueError(f"not an STDiTBlock of this shape: missing {extra}, unexpected {unexpected}")
