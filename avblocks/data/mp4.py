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

import contextlib
import math
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

__all__ = ["Mp4Writer", "write_mp4"]

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


class Mp4Writer:
    """Encode frames to an mp4 as they come (H.264 + AAC); the file appears atomically on :meth:`close`.

    ``write(frames c k h w)`` encodes those frames and the audio samples that belong to them
    (``audio`` is given up front, ``n`` or ``ch n``: video frame ``j`` owns samples
    ``[j sr / fps, (j + 1) sr / fps)``, encoded in whole AAC frames of 1024 samples as the
    video reaches them). :meth:`close` writes the rest of the audio, flushes the encoders and
    renames the temporary file over ``path``; used as a context manager, an exception
    removes the temporary file and leaves ``path`` as it was. Memory does not grow with the
    number of frames written. ``tune="zerolatency"`` (no lookahead, no B-frames) makes libx264
    emit each frame as it is written instead of buffering a window of frames.
    """

    def __init__(self, path: "str | os.PathLike[str]", *, fps: "int | float | Fraction | str", sample_rate: int,
                 audio: Tensor | None = None, crf: int = 18, preset: str = "medium", tune: str | None = None,
                 audio_bitrate: int = 192_000):
        self.fps = as_fraction(fps, "fps")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise ValueError(f"sample_rate ({sample_rate!r}) must be an integer >= 1")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf ({crf}) must be in [0, 51]")
        self.sample_rate = sample_rate
        self.audio = None
        if audio is not None:
            wav = audio.detach().float().cpu()
            wav = wav[None] if wav.ndim == 1 else wav
            if wav.ndim != 2 or wav.shape[0] not in (1, 2):
                raise ValueError(f"audio must be n or ch n with 1 or 2 channels, got {tuple(audio.shape)}")
            self.audio = wav  # clamped chunk by chunk as it is encoded: no copy of a long track
        self.options = {"crf": str(crf), "preset": preset} | ({"tune": tune} if tune else {})
        self.audio_bitrate = audio_bitrate
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        # the temporary name ends in .mp4 too; the format is passed anyway so PyAV never guesses
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._container = av.open(str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"})
        self._video = self._audio = None
        self.frames = 0
        self._audio_pos = 0

    def _open_streams(self, height: int, width: int) -> None:
        vs = self._container.add_stream("libx264", rate=self.fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.time_base = 1 / self.fps
        vs.options = self.options
        self._video = vs
        if self.audio is not None:
            self._audio = self._container.add_stream("aac", rate=self.sample_rate)
            self._audio.layout = "mono" if self.audio.shape[0] == 1 else "stereo"
            self._audio.bit_rate = self.audio_bitrate

    def write(self, frames: Tensor) -> None:
        """Encode ``frames`` (``c k h w``, float in [-1, 1] or uint8, ``c`` 1 or 3)."""
        if frames.ndim != 4 or frames.shape[0] not in (1, 3):
            raise ValueError(f"frames must be c k h w with c 1 or 3 (c t h w layout), got {tuple(frames.shape)}")
        pixels = _video_uint8(frames)
        if self._video is None:
            self._open_streams(pixels.shape[1], pixels.shape[2])
        elif pixels.shape[1:3] != (self._video.height, self._video.width):
            raise ValueError(f"frames are {pixels.shape[1:3]}, the file's are {(self._video.height, self._video.width)}")
        for img in pixels:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = self.frames, 1 / self.fps
            self._container.mux(self._video.encode(frame))
            self.frames += 1
        self._write_audio(math.floor(self.frames * self.sample_rate / self.fps))

    def _write_audio(self, upto: int, final: bool = False) -> None:
        """Encode the audio up to sample ``upto`` in whole AAC frames; ``final`` also the last part."""
        if self._audio is None:
            return
        upto = min(upto, self.audio.shape[-1])
        layout = "mono" if self.audio.shape[0] == 1 else "stereo"
        while self._audio_pos + _AAC_FRAME <= upto or (final and self._audio_pos < upto):
            end = min(self._audio_pos + _AAC_FRAME, upto)
            chunk = np.ascontiguousarray(self.audio[:, self._audio_pos : end].clamp(-1, 1).numpy())
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            af.sample_rate, af.pts, af.time_base = self.sample_rate, self._audio_pos, Fraction(1, self.sample_rate)
            self._container.mux(self._audio.encode(af))
            self._audio_pos = end

    def close(self) -> Path:
        """Write the rest of the audio, finish the file and move it to ``path``."""
        if self._video is None:
            error = ValueError(f"{self.path}: no frames were written")
            self._discard(ValueError, error, None)
            raise error
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            self._write_audio(self.audio.shape[-1], final=True)
            self._container.mux(self._audio.encode(None))
        self._container.close()
        self._stack.close()  # fsync, rename over path, fsync the folder
        return self.path

    def _discard(self, kind, value, tb) -> None:
        self._container.close()
        self._stack.__exit__(kind, value, tb)  # atomic_path sees the error: removes the temporary file

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self._discard(kind, value, tb)


@shapecheck
def write_mp4(
    path: "str | os.PathLike[str]",
    video: Shaped[Tensor, "c t h w"],
    audio: Float[Tensor, " n"] | Float[Tensor, "ch n"] | None,
    fps: "int | float | Fraction | str",
    sample_rate: int,
    *,
    crf: int = 18,
    preset: str = "medium",
    audio_bitrate: int = 192_000,
) -> Path:
    """Encode ``video`` (+ ``audio``) to ``path`` as H.264 + AAC in mp4, atomically.

    ``crf`` (0-51, lower is better) and ``preset`` go to libx264. Returns the final path.
    One :class:`Mp4Writer` call: all the frames, then all the audio as given.
    """
    if video.shape[0] not in (1, 3):
        raise ValueError(f"video channels ({video.shape[0]}) must be 1 or 3 (c t h w layout)")
    if video.shape[1] < 1:
        raise ValueError("video must have at least one frame")
    if audio is not None and (audio.ndim == 2 and audio.shape[0] not in (1, 2)):
        raise ValueError(f"audio channels ({audio.shape[0]}) must be 1 or 2")
    with Mp4Writer(path, fps=fps, sample_rate=sample_rate, audio=audio, crf=crf, preset=preset,
                   audio_bitrate=audio_bitrate) as writer:
        writer.write(video)
    return Path(path)
