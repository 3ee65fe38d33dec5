"""Rate-resampled feature addition (MMAudio): each stream gets the other's features, resampled
to its own token times, added through a zero-initialised gate.

    video' = video + g_v * W_va resample_{a -> v}(n_a(audio))
    audio' = audio + g_a * W_av resample_{v -> a}(n_v(video))

MMAudio aligns its visual (Synchformer, 24 fps) features to the audio latents (31.25 fps) by
resampling them in time and adding them to every audio token; here both directions do it.

**Resampling** (a box kernel in seconds): the value at a destination token of time ``t`` is
the mean of the source tokens whose time lies within ``|t - t'| <= window``. It runs through
:func:`~avblocks.attention.dispatch.attend` as attention with all scores equal under a
:class:`~avblocks.attention.time_masks.TimeWindowMask`, so the softmax is exactly that mean
and every backend applies. With the default ``window`` (half the coarser stream's token
spacing), a video frame takes the mean of the audio tokens inside its frame period (box
down-sampling) and an audio token takes the video tokens of the frame it falls in: the mean
over that frame's spatial tokens, repeated along the frame (MMAudio's nearest-neighbour
up-sampling of the visual features, after spatial pooling).

Choices: no positions (the kernel depends on time differences only, so the coupling is
time-shift invariant, and local: an audio change at ``tau`` moves only video tokens within
``window`` of ``tau``); per-stream LayerNorm (modulated when ``conditioned``) before
resampling; the projection ``W`` maps the source width to the destination width.
"""

from torch import nn

from avblocks.attention.dispatch import attend
from avblocks.attention.time_masks import TimeWindowMask
from avblocks.coupling.base import Coupling, StreamGate, check_window, token_spacing
from avblocks.typing import Tensor

__all__ = ["ResampledAddition", "resample"]


def resample(source: Tensor, mask: TimeWindowMask) -> Tensor:
    """``b ns d`` source tokens -> ``b nd d``: for each destination row of ``mask``, the mean of
    the source tokens it allows (attention with all scores zero)."""
    b, n, d = source.shape
    zeros = source.new_zeros(b, 1, max(mask.q_len, n), d)
    return attend(zeros[:, :, : mask.q_len], zeros[:, :, :n], source[:, None], mask=mask)[:, 0]


class ResampledAddition(Coupling):
    """Each stream adds the other's features resampled to its token times (module doc).

    Args:
        video_dim, audio_dim: widths of the two streams.
        window: half-width of the box kernel in seconds (default ``None``: half of the larger
            of the two streams' token spacings, measured from the times of each call).
        conditioned: norms and gates from the per-stream conditioning (adaLN-Zero).
    """

    def __init__(self, *, video_dim: int, audio_dim: int, window: float | None = None,
                 conditioned: bool = False) -> None:
        super().__init__()
        check_window(window)
        self.video_dim, self.audio_dim, self.window = video_dim, audio_dim, window
        self.video_norm = nn.LayerNorm(video_dim, elementwise_affine=False, eps=1e-6)
        self.audio_norm = nn.LayerNorm(audio_dim, elementwise_affine=False, eps=1e-6)
        self.video_from_audio = nn.Linear(audio_dim, video_dim)
        self.audio_from_video = nn.Linear(video_dim, audio_dim)
        for linear in (self.video_from_audio, self.audio_from_video):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        self.video_gate = StreamGate(dim=video_dim, conditioned=conditioned)
        self.audio_gate = StreamGate(dim=audio_dim, conditioned=conditioned)

    def window_for(self, video_time: Tensor, audio_time: Tensor) -> float:
        """The kernel half-width used for these times (seconds)."""
        if self.window is not None:
            return self.window
        return 0.5 * max(token_spacing("video_time", video_time), token_spacing("audio_time", audio_time))

    def couple(self, video, audio, video_time, audio_time, video_cond, audio_cond):
        v_shift, v_scale, v_gate = self.video_gate(video, video_cond)
        a_shift, a_scale, a_gate = self.audio_gate(audio, audio_cond)
        v = self.video_gate.norm(self.video_norm, video, v_shift, v_scale)
        a = self.audio_gate.norm(self.audio_norm, audio, a_shift, a_scale)
        window = self.window_for(video_time, audio_time)
        to_video = self.video_from_audio(resample(a, TimeWindowMask(video_time, audio_time, window)))
        to_audio = self.audio_from_video(resample(v, TimeWindowMask(audio_time, video_time, window)))
        return video + v_gate * to_video, audio + a_gate * to_audio
