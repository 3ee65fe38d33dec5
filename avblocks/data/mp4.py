"""Write a sounding video to an mp4 file: H.264 (libx264, yuv420p) + AAC (FFmpeg's native encoder).

Choices:

- Video ``c t h w`` with ``c`` 3 (RGB) or 1 (grey, repeated to RGB); float in [-1, 1]
  (clamped, then ``round((x + 1) * 127.5)``) or uint8 as is.
- yuv420p needs even sizes: an odd height or width is padded by repeating the last row or
  column, so the file is at most one pixel taller/wider than the input.
- Frame ``k`` gets ``pts = k`` in a ``1 / fps`` time base, so fractional rates are exact:
  pass ``Fraction(30000, 1001)`` (or the float ``30000 / 1001``) for 29.97 fps.
- Audio ``n`` (mono) or ``ch n`` (1 or 2 channels) at ``sample_rate``, written from time 0 as
  given (no trimming to the video length); ``audio=None`` writes a video-only file.
  The AAC encoder's 1024-sample priming is recorded in the mp4 edit list, so readers that
  honour it (FFmpeg/PyAV, :func:`avblocks.data.read_clip`) see sample 0 at time 0.
- The file is written with :func:`avblocks.atomic.atomic_path`: a temporary name in the
  destination folder (ending in ``.mp4``), flushed to disk, then renamed over ``path``; a
  crash never leaves a half-written mp4 and never damages a previous file at ``path``.
"""

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from avblocks.atomic import atomic_path
from avblocks.timing import as_fraction
from avblocks.typing import shapecheck

__all__ = ["write_mp4"]

_AAC_FRAME = 1024


def _video_uint8(video: Tensor) -> np.ndarray:
    """``t h w 3`` uint8 with even ``h`` and ``w``."""
    if video.dtype == torch.uint8:
        v = video
    elif video.is_floating_point():
        v = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    else:
        raise ValueError(f"video dtype ({video.dtype}) must be floating point or uint8")
    if v.shape[0] == 1:
        v = v.expand(3, -1, -1, -1)
    v = v.permute(1, 2, 3, 0).cpu()
    if v.shape[1] % 2:
        v = torch.cat([v, v[:, -1:]], dim=1)
    if v.shape[2] % 2:
        v = torch.cat([v, v[:, :, -1:]], dim=2)
    return np.ascontiguousarray(v.numpy())


@shapecheck
def write_mp4(
    path: "str | os.PathLike[str]",
    video: Shaped[Tensor, "c t h w"],
    audio: Float[Tensor, " n"] | Float[Tensor, "ch n"] | None,
    fps: int | float | Fraction,
    sample_rate: int,
    *,
    crf: int = 18,
    preset: str = "medium",
    audio_bitrate: int = 192_000,
) -> Path:
    """Encode ``video`` (+ ``audio``) to ``path`` as H.264 + AAC in mp4, atomically.

    ``crf`` (0-51, lower is better) and ``preset`` go to libx264. Returns the final path.
    """
    if video.shape[0] not in (1, 3):
        raise ValueError(f"video channels ({video.shape[0]}) must be 1 or 3 (c t h w layout)")
    if video.shape[1] < 1:
        raise ValueError("video must have at least one frame")
    fps_q = as_fraction(fps, "fps")
    if sample_rate < 1:
        raise ValueError(f"sample_rate ({sample_rate}) must be >= 1")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf ({crf}) must be in [0, 51]")
    wav = None
    if audio is not None:
        wav = audio.detach().float().cpu()
        if wav.ndim == 1:
            wav = wav[None]
        if wav.shape[0] not in (1, 2):
            raise ValueError(f"audio channels ({wav.shape[0]}) must be 1 or 2")
        wav = np.ascontiguousarray(wav.clamp(-1, 1).numpy())
    frames = _video_uint8(video)
    _, height, width, _ = frames.shape

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends in .mp4 too; format is passed anyway so PyAV never guesses.
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            vs = container.add_stream("libx264", rate=fps_q)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.time_base = 1 / fps_q
            vs.options = {"crf": str(crf), "preset": preset}
            as_ = None
            if wav is not None:
                as_ = container.add_stream("aac", rate=sample_rate)
                as_.layout = "mono" if wav.shape[0] == 1 else "stereo"
                as_.bit_rate = audio_bitrate
            for k, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = k, 1 / fps_q
                container.mux(vs.encode(frame))
            container.mux(vs.encode(None))
            if as_ is not None:
                layout = "mono" if wav.shape[0] == 1 else "stereo"
                for i in range(0, wav.shape[1], _AAC_FRAME):
                    chunk = np.ascontiguousarray(wav[:, i : i + _AAC_FRAME])
                    af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                    af.sample_rate, af.pts, af.time_base = sample_rate, i, Fraction(1, sample_rate)
                    container.mux(as_.encode(af))
                container.mux(as_.encode(None))
    return path
