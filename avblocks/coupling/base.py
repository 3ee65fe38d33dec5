"""The one interface every cross-modal coupling implements, and the gates they share.

A *coupling* mixes two token streams that carry times::

    video' , audio' = coupling(video  b nv dv, audio  b na da,
                               video_time nv, audio_time na,      # seconds, per token
                               video_cond b dv | None, audio_cond b da | None)

- The streams may differ in width (``dv``, ``da``), in length and in rate: each token says
  the time in seconds it stands for (a span's centre), in the stream's token order. Times are
  the same for every clip of the batch (1-D).
- Conditioning (optional): one vector per clip and stream, of the stream's own width (the
  adaLN conditioning of a DiT block: timestep + label). Couplings built with
  ``conditioned=True`` take their norms' shift / scale and their output gates from it
  (adaLN-Zero); without it, gates are learned vectors.
- **Zero-gated**: every path from one stream into the other ends in a gate or a projection
  that is zero at initialisation, so a fresh coupling returns both streams unchanged and can
  be dropped into a trained two-stream model (each coupling's test checks it).
- Residual: outputs are the inputs plus what the coupling adds; a coupling never replaces a
  stream.

:class:`Coupling` checks the shapes (jaxtyping: ``b`` shared, ``nv`` / ``na`` bound to the
times) and the times (finite), then calls the subclass's :meth:`Coupling.couple`.
"""

import torch
from torch import nn

from avblocks.dit.modulation import AdaLNZero, modulate
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["Coupling", "StreamGate", "attention_width", "check_times", "check_window", "token_spacing"]

VideoTimes = Float[Tensor, "nv"]  # module-level: one-word shapes in annotations read as names to pyflakes
AudioTimes = Float[Tensor, "na"]
VideoCond = Float[Tensor, "b dv"]
AudioCond = Float[Tensor, "b da"]


def check_times(name: str, times: Tensor) -> None:
    """A ``ValueError`` naming ``name`` unless ``times`` are finite seconds (eager only)."""
    if not times.is_floating_point():
        raise ValueError(f"{name} must be float seconds, got dtype {times.dtype}")
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(times).all()):
        raise ValueError(f"{name} holds non-finite times")


def attention_width(video_dim: int, audio_dim: int, dim: int | None, heads: int) -> int:
    """The attention width two streams share: ``dim``, or the smaller stream width; ValueError
    unless ``heads`` cut it into heads of an even width (rotary pairs)."""
    dim = min(video_dim, audio_dim) if dim is None else dim
    if heads < 1 or dim < 1 or dim % heads or (dim // heads) % 2:
        raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads}) with an "
                         "even head width (rotary pairs)")
    return dim


def check_window(window: float | None) -> None:
    """A coupling's window in seconds: ``None`` (no window) or >= 0, else ValueError."""
    if window is not None and not window >= 0:
        raise ValueError(f"window ({window}) must be None or >= 0 seconds")


def token_spacing(name: str, times: Tensor) -> float:
    """The smallest gap in seconds between two distinct token times of a stream.

    A stream whose tokens all share one time (a single frame) has no spacing: ValueError.
    """
    distinct = torch.unique(times.detach().double())
    if len(distinct) < 2:
        raise ValueError(f"{name} has a single distinct time ({float(distinct[0])} s): its token "
                         "spacing is undefined; give the window explicitly")
    return float(distinct.diff().min())


class StreamGate(nn.Module):
    """Shift / scale of a branch's input norm and the gate of its output, for one stream.

    ``conditioned``: ``(shift, scale, gate) = AdaLNZero(cond)`` per clip (DiT's adaLN-Zero;
    the Linear starts at zero, so the gate does). Otherwise shift = scale = 0 and the gate is
    a learned per-channel vector that starts at zero. Either way the branch is off at
    initialisation and has a gradient.
    """

    def __init__(self, *, dim: int, conditioned: bool) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim ({dim}) must be >= 1")
        self.conditioned = conditioned
        if conditioned:
            self.ada = AdaLNZero(hidden_size=dim, num_vectors=3)
        else:
            self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(shift, scale, gate)``, each broadcastable to ``x`` (``b n d``)."""
        if self.conditioned:
            if cond is None:
                raise ValueError("this coupling was built with conditioned=True: give video_cond "
                                 "and audio_cond (one vector per clip and stream)")
            shift, scale, gate = (v.unsqueeze(1) for v in self.ada(cond))
            return shift, scale, gate
        zero = x.new_zeros(())
        return zero, zero, self.gate

    def norm(self, norm: nn.Module, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        return modulate(norm(x), shift, scale)


class Coupling(nn.Module):
    """Base class of every coupling: the typed, shape-checked interface (module doc).

    Subclasses set ``video_dim`` / ``audio_dim`` and implement :meth:`couple`.
    """

    video_dim: int
    audio_dim: int

    @shapecheck
    def forward(
        self,
        video: Float[Tensor, "b nv dv"],
        audio: Float[Tensor, "b na da"],
        video_time: VideoTimes,
        audio_time: AudioTimes,
        video_cond: VideoCond | None = None,
        audio_cond: AudioCond | None = None,
    ) -> tuple[Float[Tensor, "b nv dv"], Float[Tensor, "b na da"]]:
        if video.shape[-1] != self.video_dim or audio.shape[-1] != self.audio_dim:
            raise ValueError(f"{type(self).__name__} couples widths (video {self.video_dim}, audio "
                             f"{self.audio_dim}), got tokens of width ({video.shape[-1]}, {audio.shape[-1]})")
        check_times("video_time", video_time)
        check_times("audio_time", audio_time)
        return self.couple(video, audio, video_time, audio_time, video_cond, audio_cond)

    def couple(self, video: Tensor, audio: Tensor, video_time: Tensor, audio_time: Tensor,
               video_cond: Tensor | None, audio_cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """The coupling itself, on inputs :meth:`forward` has checked; each subclass implements it."""
        raise NotImplementedError
