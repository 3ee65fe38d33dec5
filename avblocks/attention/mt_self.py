"""MT-SelfAttn: multi-scale temporal self-attention on planes that contain time (ProAV-DiT).

Input: a ``th`` plane ``b c t h``, a ``tw`` plane ``b c t w``, or a volume ``b c t h w``. Every
non-time position is an independent sequence of ``t`` tokens (folded into the batch:
``b c t n -> (b n) t c``), so nothing mixes across ``h``/``w``: only along ``t``.

What each scale sees (exact; ``x`` = the pre-normed tokens of one sequence, frames ``0..t-1``):

- queries are always at full rate: one query per frame ``i``, ``q_i = W_q x_i``;
- at scale ``s`` (default ``s`` in ``(1, 2, 4)``) the keys and values are the frames
  average-pooled over non-overlapping windows of ``s`` frames (kernel = stride = ``s``):
  key ``j`` summarises frames ``[s*j, s*j + s - 1]``, ``k_j = W_k mean(x_{sj..sj+s-1})``,
  likewise ``v_j``; scale 1 is ordinary temporal self-attention. One set of q/k/v projections
  is shared by all scales (pooling commutes with the linear maps; qk-norm, if on, is applied
  to the pooled keys). ``t`` must be divisible by the largest scale (``ValueError`` naming
  ``t`` and the scale otherwise) — we do not pad, so every pooled key covers ``s`` real frames;
- each scale runs its own softmax attention, giving ``o_s`` per head; the scales are fused by
  learned weights ``w = softmax(logits, over scales)``, one logit per (scale, head), initialised
  to 0 (equal weights); ``out = x + W_o(sum_s w_s o_s)`` with ``W_o`` zero-initialised, so a
  fresh block is the identity.

Frame-causal mode (``causal=True``): a query at frame ``i`` never sees information from frames
``> i`` at any scale. At scale 1 it sees frames ``<= i``. At scale ``s`` it sees pooled key ``j``
only when the whole window is in the past: ``s*j + s - 1 <= i``. Queries at frames
``i < s - 1`` see no pooled key at that scale; that scale contributes nothing to them and the
fusion weights are renormalised over the scales that do contribute (scale 1 always does; causal
mode requires scale 1 in ``scales``):
``out_i = sum_s w_s m_si o_si / sum_s w_s m_si`` with ``m_si = [i >= s - 1]``. (Internally
those rows are given pooled key 0 to keep the softmax defined, and then multiplied by
``m_si = 0``, so neither value nor gradient carries future information.)
"""

import torch
from einops import rearrange, reduce
from torch import nn

from avblocks.attention.dispatch import attend
from avblocks.attention.masks import FrameCausalMask, Mask
from avblocks.attention.projections import MultiHeadAttention
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["MTSelfAttention", "PooledCausalMask"]


class PooledCausalMask(Mask):
    """Queries at frames ``0..t-1`` vs keys pooled over windows of ``stride`` frames.

    Query ``i`` may see pooled key ``j`` iff its window has ended: ``stride*j + stride - 1 <= i``.
    Rows with no such key (``i < stride - 1``) are given key 0 so that every row has a key
    (the :class:`Mask` invariant); the caller must zero those rows (see ``MTSelfAttention``).
    """

    def __init__(self, num_frames: int, stride: int) -> None:
        if stride < 1 or num_frames < 1 or num_frames % stride:
            raise ValueError(f"num_frames ({num_frames}) must be a positive multiple of "
                             f"stride ({stride})")
        self.num_frames, self.stride = num_frames, stride
        self.q_len, self.kv_len = num_frames, num_frames // stride

    def key(self) -> tuple:
        return ("PooledCausalMask", self.num_frames, self.stride)

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        s = self.stride
        ended = kv_idx * s + s - 1 <= q_idx
        return ended | ((q_idx < s - 1) & (kv_idx == 0))


class MTSelfAttention(nn.Module):
    """Multi-scale temporal self-attention on ``b c t h`` / ``b c t w`` / ``b c t h w``.

    Args:
        dim: channels ``c``.
        heads, kv_heads, head_dim, qk_norm, qkv_bias: see :class:`MultiHeadAttention`.
        scales: temporal pooling factors, distinct positive integers (default ``(1, 2, 4)``).
        causal: frame-causal at every scale (see the module docstring).
        norm_layer: class called as ``norm_layer(dim)``; pre-norm over channels.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 8,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        scales: tuple[int, ...] = (1, 2, 4),
        causal: bool = False,
        qk_norm: bool = False,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        scales = tuple(scales)
        if not scales or any(s < 1 for s in scales) or len(set(scales)) != len(scales):
            raise ValueError(f"scales ({scales}) must be distinct positive integers")
        if causal and 1 not in scales:
            raise ValueError(f"causal=True needs scale 1 in scales ({scales}): the first "
                             f"frames see no finished window at coarser scales")
        self.scales, self.causal, self.heads = scales, causal, heads
        self.norm = norm_layer(dim)
        self.attn = MultiHeadAttention(dim=dim, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                                       qk_norm=qk_norm, qkv_bias=qkv_bias)
        self.scale_logits = nn.Parameter(torch.zeros(len(scales), heads))

    def _mask(self, t: int, s: int):
        if not self.causal:
            return None
        return FrameCausalMask(t, 1) if s == 1 else PooledCausalMask(t, s)

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t *rest"]) -> Float[Tensor, "b c t *rest"]:
        b, c, t = x.shape[:3]
        if x.ndim not in (4, 5):
            raise ValueError(f"MTSelfAttention expects b c t h, b c t w or b c t h w, "
                             f"got shape {tuple(x.shape)}")
        for s in self.scales:
            if t % s:
                raise ValueError(f"t ({t}) must be divisible by the temporal scale ({s})")
        tokens = rearrange(x.reshape(b, c, t, -1), "b c t n -> (b n) t c")
        h = self.norm(tokens)
        q = self.attn.queries(h)
        weights = rearrange(self.scale_logits.softmax(dim=0), "s heads -> s 1 heads 1 1")
        frame = rearrange(torch.arange(t, device=x.device), "t -> 1 1 t 1")
        fused, total = 0.0, 0.0
        for i, s in enumerate(self.scales):
            k, v = self.attn.keys_values(reduce(h, "n (tp s) c -> n tp c", "mean", s=s))
            w = weights[i]
            if self.causal and s > 1:
                w = w * (frame >= s - 1)  # rows with no finished window get nothing
            fused = fused + w * attend(q, k, v, mask=self._mask(t, s))
            total = total + w
        out = tokens + self.attn.project_out(fused / total)
        return rearrange(out, "(b n) t c -> b c t n", b=b).reshape(x.shape)
