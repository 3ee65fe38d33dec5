"""Two streams of different shapes as the one tensor the samplers move, each with its own time.

The samplers (:mod:`avblocks.diffusion.samplers`) integrate one data tensor whose frames may
each have their own time and may be held clean. :class:`StreamPack` packs a video ``b ...``
and an audio ``b ...`` of any shapes into ``b n`` (each flattened per clip, video first) and
uses the value axis as the frame axis (``frame_dim=1``): a per-stream time is a ``b n`` tensor
constant over each stream, a held-clean stream a ``b n`` mask true over it. Nothing is padded,
so every value of both streams is moved and (in a loss) weighs the same.

:class:`PackedDenoiser` puts a two-stream model ``model(video, audio, t_video, t_audio, **kw)
-> (v_video, v_audio)`` behind ``forward(x b n, t b | b n, **kw) -> b n``, which is what the
samplers and :class:`~avblocks.diffusion.guidance.ClassifierFreeGuidance` call. The streams
are handed to the model in its weights' dtype and the velocities come back in the packed
tensor's, so a bfloat16 model samples inside a float32 solver.
"""

import math

import torch
from torch import nn

from avblocks.typing import Tensor

__all__ = ["StreamPack", "PackedDenoiser"]


class StreamPack:
    """``(video b *video_shape, audio b *audio_shape) <-> b n`` (module doc).

    Args:
        video_shape, audio_shape: the per-clip shapes (without the batch axis).
    """

    frame_dim = 1

    def __init__(self, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> None:
        self.video_shape, self.audio_shape = tuple(video_shape), tuple(audio_shape)
        if any(s < 1 for s in self.video_shape + self.audio_shape):
            raise ValueError(f"stream shapes must be positive, got {self.video_shape} and {self.audio_shape}")
        self.n_video, self.n_audio = math.prod(self.video_shape), math.prod(self.audio_shape)

    @property
    def size(self) -> int:
        return self.n_video + self.n_audio

    def pack(self, video: Tensor, audio: Tensor) -> Tensor:
        """``b *video_shape`` and ``b *audio_shape`` -> ``b n``."""
        if tuple(video.shape[1:]) != self.video_shape or tuple(audio.shape[1:]) != self.audio_shape:
            raise ValueError(f"streams {tuple(video.shape)} and {tuple(audio.shape)} do not match the pack's "
                             f"(b, *{self.video_shape}) and (b, *{self.audio_shape})")
        return torch.cat([video.reshape(len(video), -1), audio.reshape(len(audio), -1)], dim=1)

    def unpack(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``b n`` -> ``(video, audio)`` (views)."""
        if x.ndim != 2 or x.shape[1] != self.size:
            raise ValueError(f"packed streams must be b {self.size}, got {tuple(x.shape)}")
        video, audio = x.split([self.n_video, self.n_audio], dim=1)
        return video.reshape(-1, *self.video_shape), audio.reshape(-1, *self.audio_shape)

    def times(self, t_video: Tensor, t_audio: Tensor) -> Tensor:
        """Per-stream times ``b`` and ``b`` -> per-value times ``b n``."""
        return torch.cat([t_video[:, None].expand(-1, self.n_video), t_audio[:, None].expand(-1, self.n_audio)],
                         dim=1)

    def stream_times(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``b`` or ``b n`` times -> ``(t_video b, t_audio b)``; a ``b n`` tensor must be constant
        over each stream (ValueError otherwise)."""
        if t.ndim == 1:
            return t, t
        if t.ndim != 2 or t.shape[1] != self.size:
            raise ValueError(f"times must be b or b {self.size}, got {tuple(t.shape)}")
        t_video, t_audio = t[:, 0], t[:, self.n_video]
        if not torch.compiler.is_compiling():
            if not (bool((t[:, : self.n_video] == t_video[:, None]).all())
                    and bool((t[:, self.n_video:] == t_audio[:, None]).all())):
                raise ValueError("per-value times must be constant over each stream (one time per stream)")
        return t_video, t_audio

    def clean_mask(self, batch: int, *, video: bool, audio: bool, device=None) -> Tensor:
        """``b n`` bool, true over the streams held clean."""
        mask = torch.zeros(batch, self.size, dtype=torch.bool, device=device)
        mask[:, : self.n_video] = video
        mask[:, self.n_video:] = audio
        return mask


class PackedDenoiser(nn.Module):
    """A two-stream model as the samplers call it: ``forward(x b n, t, **kw) -> b n`` (module doc)."""

    def __init__(self, model: nn.Module, pack: StreamPack) -> None:
        super().__init__()
        self.model, self.pack = model, pack

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # the wrapped model's attributes (null_label, ...)
            return getattr(super().__getattr__("model"), name)

    def forward(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        dtype = next(self.model.parameters()).dtype
        video, audio = (s.to(dtype) for s in self.pack.unpack(x))
        t_video, t_audio = self.pack.stream_times(t)
        v_video, v_audio = self.model(video, audio, t_video, t_audio, **kwargs)
        return self.pack.pack(v_video, v_audio).to(x.dtype)
