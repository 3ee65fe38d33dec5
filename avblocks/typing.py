"""Axis legend, tensor aliases and the shape-check decorator every public forward uses.

Axis legend (the same names appear in einops patterns throughout the library):

    b   batch
    c   channels (features of a volume or plane)
    t   time: video frames, and the frames of video-like audio (one per video frame)
    h   height (pixels or latent rows)
    w   width; for video-like audio, spectrogram columns within one frame
    f   mel bins (the "height" of video-like audio)
    n   samples of a waveform; or tokens of a sequence (``b n d``)
    ch  audio channels of a multi-channel waveform
    d   token width (model dimension)
    s   side of the common square grid of stacked planes

Canonical layouts:

    video, volumes          b c t h w
    video-like audio        b c t f w
    waveform                b n  (mono)  or  b ch n
    planes                  b c h w  (hw),  b c t h  (th),  b c t w  (tw)
    tokens                  b n d
    timesteps               b  or  b t   (one per sample, or one per frame/plane)

jaxtyping binds an axis name across *all* annotated arguments of one call, so a function
that takes both modalities names their channel axes apart (``"b cv t h w"`` and
``"b ca t f w"``) while keeping ``b`` and ``t`` shared: that sharing is the alignment check.

Shape-check policy:

- eager mode: every function decorated with :func:`shapecheck` is checked by jaxtyping with
  beartype; a wrong shape raises an error that names the axis and the sizes it was bound to;
- under ``torch.compile`` the wrapper steps aside (``torch.compiler.is_compiling()``), so a
  decorated module compiles with ``fullgraph=True`` and no graph break;
- ``AVBLOCKS_TYPECHECK=0`` makes :func:`shapecheck` return the function unchanged, decided
  once at import, so disabled checks cost nothing per call.
"""

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import torch
from jaxtyping import Bool, Float, Int, Shaped, jaxtyped
from torch import Tensor

__all__ = [
    "TYPECHECK",
    "shapecheck",
    "Tensor",
    "Float",
    "Int",
    "Bool",
    "Shaped",
    "Video",
    "Volume",
    "AudioFrames",
    "Waveform",
    "MultiChannelWaveform",
    "PlaneHW",
    "PlaneTH",
    "PlaneTW",
    "Tokens",
    "Timesteps",
    "FrameTimesteps",
]

_OFF = {"0", "false", "no", "off"}
TYPECHECK: bool = os.environ.get("AVBLOCKS_TYPECHECK", "1").strip().lower() not in _OFF
"""Whether :func:`shapecheck` checks anything; read once from ``AVBLOCKS_TYPECHECK`` at import."""

F = TypeVar("F", bound=Callable)


def shapecheck(fn: F) -> F:
    """Check the jaxtyping annotations of ``fn`` at run time in eager mode.

    Works on functions and methods (``forward``). Returns ``fn`` itself when checks are off.
    """
    if not TYPECHECK:
        return fn
    checked = jaxtyped(typechecker=_beartype())(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # Dynamo folds is_compiling() to True while tracing, so the checker is never traced.
        if torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        return checked(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _beartype():
    from beartype import beartype

    return beartype


# Aliases for the canonical layouts (see the legend above).
Video = Float[Tensor, "b c t h w"]
Volume = Float[Tensor, "b c t h w"]
AudioFrames = Float[Tensor, "b c t f w"]
Waveform = Float[Tensor, "b n"]
MultiChannelWaveform = Float[Tensor, "b ch n"]
PlaneHW = Float[Tensor, "b c h w"]
PlaneTH = Float[Tensor, "b c t h"]
PlaneTW = Float[Tensor, "b c t w"]
Tokens = Float[Tensor, "b n d"]
Timesteps = Float[Tensor, "b"]
FrameTimesteps = Float[Tensor, "b t"]
