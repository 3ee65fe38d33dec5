"""Factorised attention on ``b c t h w`` volumes: within a frame (spatial) and across frames (temporal).

This is the factorisation ST-DiT uses (spatial attention within each of the six stacked planes,
temporal attention across the six planes at one position) and the autoencoder uses on its planes.

Both blocks are pre-norm residual blocks that return ``x + attn(norm(x))``; the output projection
of ``attn`` is zero-initialised, so a fresh block returns its input exactly. There is no separate
gate: the zero-initialised projection already makes the branch start at 0 and learn from there.
(A DiT block with adaLN-Zero modulation wants the bare branch instead: use
:class:`avblocks.attention.projections.MultiHeadAttention` on the same folded tokens.)

Neither block adds positional information: attention here is permutation-equivariant over the
tokens it mixes. Positions are the model's business (embeddings before the blocks).

Visibility (exact, obtained by folding the other axes into the batch; no mask is used):

- ``SpatialAttention`` on ``b c t h w``: token ``(t, h, w)`` sees every ``(t, h', w')`` of the
  same frame ``t``. On a plane ``b c h w`` it is plain self-attention over ``h*w`` tokens.
- ``TemporalAttention`` on ``b c t h w``: token ``(t, h, w)`` sees ``(t', h, w)`` for every
  ``t'`` (``t' <= t`` with ``causal=True``). On a plane ``b c t x`` (``th`` or ``tw``) the same
  along ``t`` for each ``x``.
"""

from einops import rearrange
from torch import nn

from avblocks.attention.masks import FrameCausalMask, Mask
from avblocks.attention.projections import MultiHeadAttention
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["SpatialAttention", "TemporalAttention"]


class _ResidualAttention(nn.Module):
    """Shared constructor: pre-norm ``norm_layer(dim)`` + :class:`MultiHeadAttention`."""

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 8,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        qk_norm: bool = False,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.norm = norm_layer(dim)
        self.attn = MultiHeadAttention(dim=dim, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                                       qk_norm=qk_norm, qkv_bias=qkv_bias)

    def _residual(self, tokens: Tensor, mask: Mask | None = None) -> Tensor:
        return tokens + self.attn(self.norm(tokens), mask=mask)


class SpatialAttention(_ResidualAttention):
    """Self-attention within each frame of ``b c t h w`` (or over a single plane ``b c h w``).

    Args: ``dim`` (channels ``c``), ``heads``, ``kv_heads`` (grouped heads), ``head_dim``,
    ``qk_norm``, ``qkv_bias``, ``norm_layer`` (a class called as ``norm_layer(dim)``, applied
    over channels of each token). Returns ``x + attn(norm(x))``, the identity at init.
    """

    @shapecheck
    def forward(self, x: Float[Tensor, "b c *grid"]) -> Float[Tensor, "b c *grid"]:
        if x.ndim == 5:
            t = x.shape[2]
            tokens = rearrange(x, "b c t h w -> (b t) (h w) c")
            tokens = self._residual(tokens)
            return rearrange(tokens, "(b t) (h w) c -> b c t h w", t=t, h=x.shape[3])
        if x.ndim == 4:
            tokens = self._residual(rearrange(x, "b c h w -> b (h w) c"))
            return rearrange(tokens, "b (h w) c -> b c h w", h=x.shape[2])
        raise ValueError(f"SpatialAttention expects b c t h w or b c h w, got shape {tuple(x.shape)}")


class TemporalAttention(_ResidualAttention):
    """Self-attention across frames at each position of ``b c t h w`` (or of a plane ``b c t x``).

    Extra arg ``causal``: a token at frame ``i`` sees frames ``<= i`` only (a frame-causal mask
    on the folded sequence of ``t`` tokens). Returns ``x + attn(norm(x))``, the identity at init.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 8,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        causal: bool = False,
        qk_norm: bool = False,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__(dim=dim, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                         qk_norm=qk_norm, qkv_bias=qkv_bias, norm_layer=norm_layer)
        self.causal = causal

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t *rest"]) -> Float[Tensor, "b c t *rest"]:
        t = x.shape[2]
        mask = FrameCausalMask(t, 1) if self.causal else None
        if x.ndim == 5:
            tokens = self._residual(rearrange(x, "b c t h w -> (b h w) t c"), mask)
            return rearrange(tokens, "(b h w) t c -> b c t h w", h=x.shape[3], w=x.shape[4])
        if x.ndim == 4:
            tokens = self._residual(rearrange(x, "b c t x -> (b x) t c"), mask)
            return rearrange(tokens, "(b x) t c -> b c t x", x=x.shape[3])
        raise ValueError(
            f"TemporalAttention expects b c t h w or a plane b c t x, got shape {tuple(x.shape)}")
