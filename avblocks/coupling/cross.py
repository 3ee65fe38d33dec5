"""Gated bidirectional audio<->video cross-attention (LTX-2, Ovi).

    video' = video + g_v * W_o^v attend(R(W_q^v n_v(video), t_v), R(W_k^a n_a(audio), t_a), W_v^a n_a(audio))
    audio' = audio + g_a * W_o^a attend(R(W_q^a n_a(audio), t_a), R(W_k^v n_v(video), t_v), W_v^v n_v(video))

``n_s`` is a LayerNorm (modulated by the stream's conditioning when ``conditioned``), ``R`` the
time-aligned rotary positions of :class:`~avblocks.attention.time_rope.TimeRotary` (one
frequency table, so tokens of the two streams meet by time in seconds), ``g_s`` the zero-
initialised gate of :class:`~avblocks.coupling.base.StreamGate`.

Choices (LTX-2 and Ovi publish code; this is a faithful, smaller reading):

- **Both directions read the inputs** (normed), not each other's updated output: the two
  updates are symmetric and independent of order (Ovi runs them in one block; LTX-2 runs
  audio->video and video->audio in one step too).
- **Widths.** Queries of a stream are projected from its own width to the attention width
  ``dim`` (``heads * head_dim``), keys / values from the other's, and the result back to the
  query stream's width: LTX-2's two streams of different widths (4096 video, 2048 audio)
  attend this way at the audio width; ``dim`` defaults to the smaller stream width.
- **Rotary on time only**, as LTX-2's cross-modal attention: no spatial positions enter the
  cross-attention (video tokens of one frame are interchangeable to an audio query).
  ``rotary=None`` drops positions entirely (permutation-invariant across the other stream).
- **Window** (optional, seconds): query at time ``t`` sees the other stream's tokens within
  ``|t - t'| <= window`` (:class:`~avblocks.attention.time_masks.TimeWindowMask`), so an
  audio change at time ``tau`` reaches only video tokens within ``window`` of ``tau``.
  ``None``: every token sees the whole other stream (LTX-2, Ovi).
- qk-norm optional (RMSNorm per head, as both models use).
"""

from torch import nn

from avblocks.attention.dispatch import attend
from avblocks.attention.projections import MultiHeadAttention
from avblocks.attention.time_masks import TimeWindowMask, TransposedMask
from avblocks.attention.time_rope import TimeRotary
from avblocks.coupling.base import Coupling, StreamGate, attention_width, check_window
from avblocks.typing import Tensor

__all__ = ["GatedCrossAttention", "rotary_attention"]


def rotary_attention(attention: MultiHeadAttention, x: Tensor, x_time: Tensor, context: Tensor,
                     context_time: Tensor, rotary: TimeRotary | None, mask) -> Tensor:
    """``attention`` of ``x`` over ``context`` with queries and keys rotated to their times."""
    q = attention.queries(x)
    k, v = attention.keys_values(context)
    if rotary is not None:
        q, k = rotary(q, x_time), rotary(k, context_time)
    return attention.project_out(attend(q, k, v, mask=mask))


class GatedCrossAttention(Coupling):
    """Gated bidirectional cross-attention between the streams (module doc).

    Args:
        video_dim, audio_dim: widths of the two streams.
        dim: attention width (default: the smaller stream width); ``heads`` must divide it.
        heads: attention heads.
        qk_norm: RMS-normalise each query and key head.
        rotary: time-aligned rotary positions (default ``TimeRotary()``; ``None``: none).
        window: seconds each token sees of the other stream on either side (``None``: all).
        conditioned: norms and gates from the per-stream conditioning (adaLN-Zero).
    """

    def __init__(
        self,
        *,
        video_dim: int,
        audio_dim: int,
        dim: int | None = None,
        heads: int = 4,
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
        common = dict(heads=heads, head_dim=dim // heads, qk_norm=qk_norm, zero_init_out=False)
        self.video_norm = nn.LayerNorm(video_dim, elementwise_affine=False, eps=1e-6)
        self.audio_norm = nn.LayerNorm(audio_dim, elementwise_affine=False, eps=1e-6)
        self.video_from_audio = MultiHeadAttention(dim=video_dim, context_dim=audio_dim, **common)
        self.audio_from_video = MultiHeadAttention(dim=audio_dim, context_dim=video_dim, **common)
        self.video_gate = StreamGate(dim=video_dim, conditioned=conditioned)
        self.audio_gate = StreamGate(dim=audio_dim, conditioned=conditioned)

    def masks(self, video_time: Tensor, audio_time: Tensor):
        """``(video -> audio, audio -> video)`` masks of the window (both ``None`` without one)."""
        if self.window is None:
            return None, None
        video_mask = TimeWindowMask(video_time, audio_time, self.window)
        return video_mask, TransposedMask(video_mask)

    def couple(self, video, audio, video_time, audio_time, video_cond, audio_cond):
        v_shift, v_scale, v_gate = self.video_gate(video, video_cond)
        a_shift, a_scale, a_gate = self.audio_gate(audio, audio_cond)
        v = self.video_gate.norm(self.video_norm, video, v_shift, v_scale)
        a = self.audio_gate.norm(self.audio_norm, audio, a_shift, a_scale)
        video_mask, audio_mask = self.masks(video_time, audio_time)
        to_video = rotary_attention(self.video_from_audio, v, video_time, a, audio_time, self.rotary,
                                    video_mask)
        to_audio = rotary_attention(self.audio_from_video, a, audio_time, v, video_time, self.rotary,
                                    audio_mask)
        return video + v_gate * to_video, audio + a_gate * to_audio
