"""Joint attention over the packed streams, per-modality weights (MMDiT, JavisDiT++).

One self-attention over the sequence ``[video tokens; audio tokens]``; everything else is per
modality::

    q_s, k_s, v_s = W_qkv^s modulate(n1_s(x_s), shift1_s, scale1_s)          s in {video, audio}
    o = attend([R(q_v, t_v); R(q_a, t_a)], [R(k_v, t_v); R(k_a, t_a)], [v_v; v_a])   one softmax
    x_s = x_s + gate1_s * W_o^s o_s
    x_s = x_s + gate2_s * MLP_s(modulate(n2_s(x_s), shift2_s, scale2_s))

(SD3's MMDiT block with the text stream replaced by audio; JavisDiT++ and the MiniMax-style
joint audio-video models use this layout.) Per modality: the qkv and output projections,
the qk-norm, the two LayerNorms, the MLP and the adaLN-Zero modulation (6 vectors from the
stream's own conditioning when ``conditioned``, else zero-initialised gate vectors).

Choices:

- **Positions**: time-aligned rotary (:class:`~avblocks.attention.time_rope.TimeRotary`) on
  every token by its own time, one frequency table, so attention between any two tokens
  (same stream or not) depends on their time difference; video tokens of one frame differ
  only by what the stream added before (e.g. a spatial sin-cos table at embedding).
- **Window** (optional, seconds): every token sees the tokens of both streams within
  ``window`` of its time (one :class:`~avblocks.attention.time_masks.TimeWindowMask` over the
  packed times); ``None``: full joint attention (MMDiT).
- **Widths**: each stream is projected to the shared attention width ``dim``
  (default: the smaller stream width) and back.
- Initialisation: xavier-uniform Linears, zero biases (timm / DiT); the gates start at zero,
  so a fresh block returns both streams unchanged.
"""

import torch
from torch import nn

from avblocks.attention.dispatch import attend
from avblocks.attention.projections import MultiHeadAttention
from avblocks.attention.time_masks import TimeWindowMask
from avblocks.attention.time_rope import TimeRotary
from avblocks.coupling.base import Coupling, StreamGate, attention_width, check_window
from avblocks.dit.blocks import DiTMlp
from avblocks.typing import Tensor

__all__ = ["JointAttention"]


def _norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


class _StreamSide(nn.Module):
    """One modality's weights in the joint block: norms, qkv / output projections, MLP, gates."""

    def __init__(self, *, width: int, dim: int, heads: int, mlp_ratio: float, qk_norm: bool,
                 conditioned: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = _norm(width), _norm(width)
        self.attn = MultiHeadAttention(dim=width, heads=heads, head_dim=dim // heads, qk_norm=qk_norm,
                                       zero_init_out=False)
        self.mlp = DiTMlp(hidden_size=width, mlp_ratio=mlp_ratio)
        self.attn_gate = StreamGate(dim=width, conditioned=conditioned)
        self.mlp_gate = StreamGate(dim=width, conditioned=conditioned)
        for linear in (self.attn.to_q, self.attn.to_k, self.attn.to_v, self.attn.to_out):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def qkv(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        shift, scale, gate = self.attn_gate(x, cond)
        h = self.attn_gate.norm(self.norm1, x, shift, scale)
        k, v = self.attn.keys_values(h)
        return self.attn.queries(h), k, v, gate

    def mlp_branch(self, x: Tensor, cond: Tensor | None) -> Tensor:
        shift, scale, gate = self.mlp_gate(x, cond)
        return x + gate * self.mlp(self.mlp_gate.norm(self.norm2, x, shift, scale))


class JointAttention(Coupling):
    """MMDiT-style joint attention block over both streams (module doc).

    Args:
        video_dim, audio_dim: widths of the two streams.
        dim: attention width (default: the smaller stream width); ``heads`` must divide it.
        heads: attention heads (shared: one softmax over both streams).
        mlp_ratio: MLP hidden width / stream width.
        qk_norm: RMS-normalise each query and key head (SD3).
        rotary: time-aligned rotary positions (default ``TimeRotary()``; ``None``: none).
        window: seconds each token sees on either side (``None``: the whole packed sequence).
        conditioned: norms and gates from the per-stream conditioning (adaLN-Zero).
    """

    def __init__(
        self,
        *,
        video_dim: int,
        audio_dim: int,
        dim: int | None = None,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        rotary: TimeRotary | None = TimeRotary(),  # noqa: B008 (frozen)
        window: float | None = None,
        conditioned: bool = False,
    ) -> None:
        super().__init__()
        dim = attention_width(video_dim, audio_dim, dim, heads)
        check_window(window)
        self.video_dim, self.audio_dim = video_dim, audio_dim
        self.rotary, self.window = rotary, window
        side = dict(dim=dim, heads=heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm, conditioned=conditioned)
        self.video = _StreamSide(width=video_dim, **side)
        self.audio = _StreamSide(width=audio_dim, **side)

    def mask(self, video_time: Tensor, audio_time: Tensor) -> TimeWindowMask | None:
        """The window over the packed sequence (``None`` without one)."""
        if self.window is None:
            return None
        times = torch.cat([video_time, audio_time])
        return TimeWindowMask(times, times, self.window)

    def couple(self, video, audio, video_time, audio_time, video_cond, audio_cond):
        qv, kv, vv, v_gate = self.video.qkv(video, video_cond)
        qa, ka, va, a_gate = self.audio.qkv(audio, audio_cond)
        if self.rotary is not None:
            qv, kv = self.rotary(qv, video_time), self.rotary(kv, video_time)
            qa, ka = self.rotary(qa, audio_time), self.rotary(ka, audio_time)
        out = attend(torch.cat([qv, qa], dim=2), torch.cat([kv, ka], dim=2), torch.cat([vv, va], dim=2),
                     mask=self.mask(video_time, audio_time))
        nv = video.shape[1]
        video = video + v_gate * self.video.attn.project_out(out[:, :, :nv])
        audio = audio + a_gate * self.audio.attn.project_out(out[:, :, nv:])
        return self.video.mlp_branch(video, video_cond), self.audio.mlp_branch(audio, audio_cond)
