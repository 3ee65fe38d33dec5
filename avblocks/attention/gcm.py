"""GCM-Attn: group cross-modal attention between a video and an audio stream (ProAV-DiT).

Both streams share the time axis ``t`` (one video-like-audio frame per video frame). Time is cut
into ``groups`` aligned groups of ``t // groups`` consecutive frames; group ``g`` is frames
``[g*t/G, (g+1)*t/G)`` of *both* streams. Within a group every video token attends to every
audio token of that group, and every audio token to every video token of that group; nothing
crosses a group boundary. The groups are folded into the batch, so the restriction is exact and
needs no mask: ``b c (g tg) n -> (b g) (tg n) c``.

Choices (ProAV-DiT publishes no code):

- groups are contiguous, equal and fixed (no overlap, no shift); ``t`` must be divisible by
  ``groups`` (``ValueError`` naming both otherwise); ``groups = 1`` is full cross-attention,
  ``groups = t`` is per-frame cross-attention;
- bidirectional and simultaneous: both directions read the block's (normed) inputs;
- any layout with time on dim 2: ``b c t``, planes ``b c t h`` / ``b c t w``, volumes
  ``b c t h w`` / ``b c t f w``; the two streams may have different layouts and widths
  (each is projected to the shared attention width ``dim``);
- pre-norm (``norm_layer`` per stream, over channels) and residual, output projections
  zero-initialised: at init the block returns both inputs exactly;
- no positional terms inside the block: within a group the attention is permutation-invariant
  over the other stream's tokens.
"""

from einops import rearrange
from torch import nn

from avblocks.attention.projections import BidirectionalCrossAttention
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["GCMAttention"]


def _fold_groups(x: Tensor, groups: int) -> Tensor:
    """``b c t ...`` -> ``(b g) (tg n) c`` where ``n`` is all non-time positions."""
    tokens = x.reshape(x.shape[0], x.shape[1], x.shape[2], -1)
    return rearrange(tokens, "b c (g tg) n -> (b g) (tg n) c", g=groups)


def _unfold_groups(tokens: Tensor, like: Tensor, groups: int) -> Tensor:
    n = tokens.shape[1] * groups // like.shape[2]
    x = rearrange(tokens, "(b g) (tg n) c -> b c (g tg) n", g=groups, n=n)
    return x.reshape(like.shape)


class GCMAttention(nn.Module):
    """Group cross-modal attention; returns ``(video', audio')``, both residual-updated.

    Args:
        video_dim: channels of the video stream.
        audio_dim: channels of the audio stream.
        groups: number of aligned time groups ``G`` (must divide ``t``).
        dim: shared attention width (default ``video_dim``); ``heads`` must divide it.
        heads: query heads; ``kv_heads``: key/value heads (grouped heads, divides ``heads``).
        qk_norm, qkv_bias, norm_layer: see :class:`BidirectionalCrossAttention`.
    """

    def __init__(
        self,
        *,
        video_dim: int,
        audio_dim: int,
        groups: int = 4,
        dim: int | None = None,
        heads: int = 8,
        kv_heads: int | None = None,
        qk_norm: bool = False,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"groups ({groups}) must be >= 1")
        self.groups = groups
        self.cross = BidirectionalCrossAttention(
            video_dim=video_dim, audio_dim=audio_dim, dim=dim, heads=heads, kv_heads=kv_heads,
            qk_norm=qk_norm, qkv_bias=qkv_bias, norm_layer=norm_layer)

    @shapecheck
    def forward(
        self, video: Float[Tensor, "b cv t *vrest"], audio: Float[Tensor, "b ca t *arest"]
    ) -> tuple[Float[Tensor, "b cv t *vrest"], Float[Tensor, "b ca t *arest"]]:
        t, g = video.shape[2], self.groups
        if t % g:
            raise ValueError(f"t ({t}) must be divisible by groups ({g})")
        v, a = self.cross(_fold_groups(video, g), _fold_groups(audio, g))
        return _unfold_groups(v, video, g), _unfold_groups(a, audio, g)
