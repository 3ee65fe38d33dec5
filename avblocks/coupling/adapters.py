"""The library's earlier couplings behind the coupling interface (adapters, not rewrites).

:class:`~avblocks.attention.gcm.GCMAttention`, :class:`~avblocks.attention.biblock.BiBlockCrossAttention`
(ProAV-DiT) and MM-Diffusion's random-shift attention
(:class:`~avblocks.attention.masks.RandomShiftMask` on
:class:`~avblocks.attention.projections.BidirectionalCrossAttention`) were written for streams
laid out by frames (``b c t ...`` with a shared ``t``). The adapters below take token streams
with times and lay them out by frames, reading the frames from the times:

- a stream's **frames** are its runs of equal times (tokens must be in time order; every
  frame must have the same number of tokens): video tokens of one frame share the frame's
  time; an audio latent of 40 tokens per second has one token per "frame";
- :class:`GCMCoupling` and :class:`BiBlockCoupling` need one frame axis for both streams:
  the audio tokens are grouped onto the video frames (``na / t`` consecutive audio tokens
  per video frame; each must lie within half a frame spacing of its frame's time, else a
  ValueError says which token is out of place), so their groups and blocks are spans of
  time, counted in video frames;
- :class:`RandomShiftCoupling` keeps each stream's own frames: ``RandomShiftMask`` maps video
  frame ``i`` onto the audio frames at the rate ratio, moved by the shift.

Only the order and the grouping of the times matter (not their values): the adapters are
exactly invariant to shifting both streams' times. They take no conditioning (the wrapped
blocks have none; their zero-initialised output projections are the gates).
"""

import torch
from einops import rearrange

from avblocks.attention.biblock import BiBlockCrossAttention
from avblocks.attention.gcm import GCMAttention
from avblocks.attention.masks import RandomShiftMask
from avblocks.attention.projections import BidirectionalCrossAttention
from avblocks.attention.time_masks import TransposedMask
from avblocks.coupling.base import Coupling
from avblocks.typing import Tensor

__all__ = ["GCMCoupling", "BiBlockCoupling", "RandomShiftCoupling", "stream_frames", "frames_onto"]


def stream_frames(name: str, times: Tensor) -> tuple[Tensor, int]:
    """``(frame times, tokens per frame)`` of a stream: its runs of equal times."""
    values, counts = torch.unique_consecutive(times.detach(), return_counts=True)
    if len(values) > 1 and not bool((values.diff() > 0).all()):
        raise ValueError(f"{name} must be in time order (frame by frame) for a frame-based coupling")
    if not bool((counts == counts[0]).all()):
        raise ValueError(f"{name}: frames have different token counts {sorted(set(counts.tolist()))}; "
                         "a frame-based coupling needs the same number of tokens in every frame")
    return values, int(counts[0])


def frames_onto(video_time: Tensor, audio_time: Tensor) -> tuple[int, int, int]:
    """``(t, video tokens per frame, audio tokens per frame)`` when the audio tokens are
    grouped onto the video frames (module doc); ValueError when they do not fit."""
    frame_times, per_frame = stream_frames("video_time", video_time)
    stream_frames("audio_time", audio_time)  # time order
    t, na = len(frame_times), len(audio_time)
    if na % t:
        raise ValueError(f"{na} audio tokens cannot be grouped onto {t} video frames evenly")
    if t > 1:
        half = 0.5 * float(frame_times.diff().min())
        owner = frame_times.repeat_interleave(na // t)
        off = (audio_time.detach() - owner).abs() > half * (1 + 1e-6)
        if bool(off.any()):
            j = int(off.nonzero()[0])
            raise ValueError(f"audio token {j} at {float(audio_time[j]):.6g} s is not within half a frame "
                             f"of video frame {j // (na // t)} at {float(owner[j]):.6g} s")
    return t, per_frame, na // t


def _by_frames(tokens: Tensor, t: int) -> Tensor:
    return rearrange(tokens, "b (t n) d -> b d t n", t=t)


def _by_tokens(frames: Tensor) -> Tensor:
    return rearrange(frames, "b d t n -> b (t n) d")


class GCMCoupling(Coupling):
    """:class:`~avblocks.attention.gcm.GCMAttention` on token streams: ``groups`` aligned groups
    of video frames (and the audio tokens of those frames) attend within the group.

    Args: ``video_dim``, ``audio_dim``, ``groups`` (must divide the video frames), ``dim``,
    ``heads``, ``qk_norm``: as :class:`GCMAttention`.
    """

    def __init__(self, *, video_dim: int, audio_dim: int, groups: int = 4, dim: int | None = None,
                 heads: int = 4, qk_norm: bool = False) -> None:
        super().__init__()
        self.video_dim, self.audio_dim = video_dim, audio_dim
        self.block = GCMAttention(video_dim=video_dim, audio_dim=audio_dim, groups=groups, dim=dim,
                                  heads=heads, qk_norm=qk_norm)

    def couple(self, video, audio, video_time, audio_time, video_cond, audio_cond):
        t, _, _ = frames_onto(video_time, audio_time)
        v, a = self.block(_by_frames(video, t), _by_frames(audio, t))
        return _by_tokens(v), _by_tokens(a)


class BiBlockCoupling(Coupling):
    """:class:`~avblocks.attention.biblock.BiBlockCrossAttention` on token streams: blocks of
    ``block_frames`` video frames see the audio of their block and ``halo`` blocks each side.

    Args: ``video_dim``, ``audio_dim``, ``block_frames``, ``halo``, ``dim``, ``heads``,
    ``qk_norm``: as :class:`BiBlockCrossAttention` (no spatial tiles, no random shift).
    """

    def __init__(self, *, video_dim: int, audio_dim: int, block_frames: int = 1, halo: int = 0,
                 dim: int | None = None, heads: int = 4, qk_norm: bool = False) -> None:
        super().__init__()
        self.video_dim, self.audio_dim = video_dim, audio_dim
        self.block = BiBlockCrossAttention(video_dim=video_dim, audio_dim=audio_dim, block_frames=block_frames,
                                           halo=halo, dim=dim, heads=heads, qk_norm=qk_norm)

    def couple(self, video, audio, video_time, audio_time, video_cond, audio_cond):
        t, _, _ = frames_onto(video_time, audio_time)
        v, a = self.block(_by_frames(video, t), _by_frames(audio, t), shift=0)
        return _by_tokens(v), _by_tokens(a)


class RandomShiftCoupling(Coupling):
    """MM-Diffusion's random-shift multimodal attention on token streams.

    Video frame ``i`` attends to the ``window`` audio frames starting at the audio frame aligned
    with it, moved by ``shift`` (:class:`~avblocks.attention.masks.RandomShiftMask`, wrapping
    around the clip); audio frame ``j`` attends to the video frames whose window holds ``j``
    (the transposed mask), so both directions use the same pairs. In training ``shift`` is drawn
    uniformly in ``[0, max_shift]`` audio frames per call (the module's generator when ``seed``
    is given); in eval mode it is 0. ``last_shift`` records the shift of the last call.

    Args: ``video_dim``, ``audio_dim``, ``window`` (audio frames seen per video frame; at least
    the audio frames per video frame, so every audio frame is seen), ``max_shift``, ``seed``,
    ``dim``, ``heads``, ``qk_norm``: as :class:`BidirectionalCrossAttention`.
    """

    def __init__(self, *, video_dim: int, audio_dim: int, window: int = 1, max_shift: int = 0,
                 seed: int | None = None, dim: int | None = None, heads: int = 4,
                 qk_norm: bool = False) -> None:
        super().__init__()
        if window < 1 or max_shift < 0:
            raise ValueError(f"window ({window}) must be >= 1 and max_shift ({max_shift}) >= 0")
        self.video_dim, self.audio_dim = video_dim, audio_dim
        self.window, self.max_shift = window, max_shift
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.cross = BidirectionalCrossAttention(video_dim=video_dim, audio_dim=audio_dim, dim=dim,
                                                 heads=heads, qk_norm=qk_norm)
        self.last_shift = 0

    def draw_shift(self) -> int:
        if not (self.training and self.max_shift > 0):
            return 0
        return int(torch.randint(0, self.max_shift + 1, (), generator=self.generator))

    def mask(self, video_time: Tensor, audio_time: Tensor, shift: int) -> RandomShiftMask:
        video_frames, per_video = stream_frames("video_time", video_time)
        audio_frames, per_audio = stream_frames("audio_time", audio_time)
        if self.window > len(audio_frames):
            raise ValueError(f"window ({self.window}) exceeds the {len(audio_frames)} audio frames")
        return RandomShiftMask(len(video_frames), per_video, len(audio_frames), per_audio,
                               shift=shift, window=self.window)

    def couple(self, video, audio, video_time, audio_time, video_cond, audio_cond):
        self.last_shift = self.draw_shift()
        video_mask = self.mask(video_time, audio_time, self.last_shift)
        return self.cross(video, audio, video_mask=video_mask, audio_mask=TransposedMask(video_mask))
