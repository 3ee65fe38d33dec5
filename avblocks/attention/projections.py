"""Multi-head projections shared by every attention block: q/k/v in, heads, qk-norm, output out.

Every block in ``avblocks.attention`` (spatial, temporal, multi-scale temporal, group and block
cross-modal) differs only in *which tokens see which*; the projections around the attention call
are the same and live here once. Blocks fold their pattern into token sequences ``b n c`` and call
:class:`MultiHeadAttention`, which calls the single entry point
:func:`avblocks.attention.dispatch.attend` (layout ``b h n d``, heads on dim 1).

Choices (ProAV-DiT publishes no code; these are ours):

- queries come from ``x`` (width ``dim``), keys/values from ``context`` (width ``context_dim``,
  default ``dim``), the attention width is ``heads * head_dim`` and the output is projected back
  to ``out_dim`` (default ``dim``), so two streams of different widths can attend to each other;
- grouped heads: ``kv_heads`` key/value heads shared by ``heads // kv_heads`` query heads each;
- qk-norm (optional): RMSNorm over ``head_dim`` of each query and key head, after the split
  (as in ViT-22B / SD3), with a learned scale per channel;
- the output projection is zero-initialised by default, so a residual block built on this module
  is the identity at initialisation (its gradient is not zero: the attention output feeds it).
"""

from einops import rearrange
from torch import nn

from avblocks.attention.dispatch import attend
from avblocks.attention.masks import Mask
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["MultiHeadAttention", "BidirectionalCrossAttention"]


class MultiHeadAttention(nn.Module):
    """``out = W_o · merge_heads(attend(norm_q(W_q x), norm_k(W_k ctx), W_v ctx, mask))``.

    Args:
        dim: width of the query tokens ``x``.
        context_dim: width of the key/value tokens (default ``dim``: self-attention).
        out_dim: width of the output (default ``dim``).
        heads: number of query heads.
        kv_heads: number of key/value heads (default ``heads``); must divide ``heads``.
        head_dim: width of one head (default ``dim // heads``; then ``heads`` must divide ``dim``).
        qk_norm: RMS-normalise each query and key head.
        qkv_bias: bias on the q/k/v projections.
        zero_init_out: zero the output projection (weight and bias) so the branch starts at 0.
    """

    def __init__(
        self,
        *,
        dim: int,
        context_dim: int | None = None,
        out_dim: int | None = None,
        heads: int = 8,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        qk_norm: bool = False,
        qkv_bias: bool = True,
        zero_init_out: bool = True,
    ) -> None:
        super().__init__()
        context_dim = dim if context_dim is None else context_dim
        out_dim = dim if out_dim is None else out_dim
        kv_heads = heads if kv_heads is None else kv_heads
        for name, value in (("dim", dim), ("context_dim", context_dim), ("out_dim", out_dim),
                            ("heads", heads), ("kv_heads", kv_heads)):
            if value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1")
        if head_dim is None:
            if dim % heads:
                raise ValueError(f"dim ({dim}) must be divisible by heads ({heads}), "
                                 f"or give head_dim explicitly")
            head_dim = dim // heads
        if head_dim < 1:
            raise ValueError(f"head_dim ({head_dim}) must be >= 1")
        if heads % kv_heads:
            raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        inner, kv_inner = heads * head_dim, kv_heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim, kv_inner, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim, kv_inner, bias=qkv_bias)
        self.q_norm = nn.RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(inner, out_dim)
        if zero_init_out:
            nn.init.zeros_(self.to_out.weight)
            nn.init.zeros_(self.to_out.bias)

    def queries(self, x: Tensor) -> Tensor:
        """``b n dim -> b heads n head_dim`` (qk-normed)."""
        return self.q_norm(rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads))

    def keys_values(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """``b m context_dim -> (k, v)``, each ``b kv_heads m head_dim`` (k qk-normed)."""
        k = rearrange(self.to_k(context), "b m (h d) -> b h m d", h=self.kv_heads)
        v = rearrange(self.to_v(context), "b m (h d) -> b h m d", h=self.kv_heads)
        return self.k_norm(k), v

    def project_out(self, heads_out: Tensor) -> Tensor:
        """``b heads n head_dim -> b n out_dim``."""
        return self.to_out(rearrange(heads_out, "b h n d -> b n (h d)"))

    @shapecheck
    def forward(
        self,
        x: Float[Tensor, "b n c"],
        context: Float[Tensor, "b m cc"] | None = None,
        mask: Mask | None = None,
    ) -> Float[Tensor, "b n co"]:
        """Attention of the tokens ``x`` over ``context`` (default ``x``) under ``mask``."""
        context = x if context is None else context
        k, v = self.keys_values(context)
        return self.project_out(attend(self.queries(x), k, v, mask=mask))


class BidirectionalCrossAttention(nn.Module):
    """Two token streams attend to each other: ``v' = v + A_va(n_v(v), n_a(a))``,
    ``a' = a + A_av(n_a(a), n_v(v))``.

    Shared by the cross-modal blocks (group and block-local), which only decide how the two
    streams are folded into matching token sequences. Both directions read the *inputs* of
    the block (normed), not each other's updated output, so the two updates are symmetric
    and can run in either order. Each output projection is zero-initialised: at init the
    block returns both streams unchanged.

    Args: ``video_dim``/``audio_dim`` (channels of each stream, may differ), ``dim`` (the shared
    attention width, default ``video_dim``), ``heads``, ``kv_heads``, ``qk_norm``, ``qkv_bias``,
    ``norm_layer`` (class, called with each stream's width).
    """

    def __init__(
        self,
        *,
        video_dim: int,
        audio_dim: int,
        dim: int | None = None,
        heads: int = 8,
        kv_heads: int | None = None,
        qk_norm: bool = False,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        dim = video_dim if dim is None else dim
        if heads < 1 or dim < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        common = dict(heads=heads, kv_heads=kv_heads, head_dim=dim // heads, qk_norm=qk_norm,
                      qkv_bias=qkv_bias)
        self.video_norm = norm_layer(video_dim)
        self.audio_norm = norm_layer(audio_dim)
        self.video_from_audio = MultiHeadAttention(dim=video_dim, context_dim=audio_dim, **common)
        self.audio_from_video = MultiHeadAttention(dim=audio_dim, context_dim=video_dim, **common)

    @shapecheck
    def forward(
        self,
        video: Float[Tensor, "b nv cv"],
        audio: Float[Tensor, "b na ca"],
        video_mask: Mask | None = None,
        audio_mask: Mask | None = None,
    ) -> tuple[Float[Tensor, "b nv cv"], Float[Tensor, "b na ca"]]:
        """``video_mask``: which audio tokens each video token sees (``nv x na``);
        ``audio_mask``: which video tokens each audio token sees (``na x nv``)."""
        v, a = self.video_norm(video), self.audio_norm(audio)
        return (video + self.video_from_audio(v, a, mask=video_mask),
                audio + self.audio_from_video(a, v, mask=audio_mask))
