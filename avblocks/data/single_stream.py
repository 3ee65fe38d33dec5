"""Read one stream of a file: the sound of any audio or video file, a video without its sound,
or one picture. What a user hands a pipeline ("here is my wav / my mp4 / my reference image").

The same PyAV decoding and the same choices as :func:`avblocks.data.read_clip` (resampling with
``torchaudio.functional.resample``, channels averaged down or a mono source repeated up,
frames scaled to cover ``size`` with FFmpeg's area scaler and centre-cropped, clip frame ``k``
showing the source frame displayed at the middle of ``[k / fps, (k + 1) / fps)``), with one
time origin per stream: ``t = 0`` is the first sample of the audio stream for
:func:`read_audio` and the first frame of the video stream for :func:`read_video`.

Every problem names the file and what was expected, as a :class:`~avblocks.data.MediaError`:
a file that is not media, a file without the stream asked for, a file shorter than asked.
"""

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from avblocks.data.media import (
    MediaError,
    _check_file,
    _decode_audio,
    _decode_video,
    _mix,
    _start,
    _to_rgb,
    _why,
    frame_times,
)
from avblocks.timing import as_fraction

__all__ = ["read_audio", "read_image", "read_video"]

_AUDIO_FILES = "an audio file (wav, flac, mp3, ogg, m4a) or a video with an audio track"


def read_audio(path: "str | os.PathLike[str]", *, sample_rate: int, channels: int = 1,
               start: "float | Fraction" = 0, duration: "float | Fraction | None" = None) -> Tensor:
    """The sound of ``path`` from ``start`` seconds, ``duration`` seconds of it (``None``: to
    the end), as ``channels n`` float32 at ``sample_rate``.

    A file shorter than ``start + duration`` is a :class:`MediaError` saying how long it is.
    """
    path = Path(path)
    start_q = as_fraction(start, "start (seconds)", positive=False)
    duration_q = None if duration is None else as_fraction(duration, "duration (seconds)")
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                kind = "no audio stream (only pictures)" if container.streams.video else "no audio stream"
                raise MediaError(path, f"{kind}; expected {_AUDIO_FILES}")
            stream = container.streams.audio[0]
            src_sr = stream.codec_context.sample_rate
            origin = _start(stream, container)
            end = None if duration_q is None else origin + start_q + duration_q
            far = origin + start_q + Fraction(10**9) if end is None else end + Fraction(1, 20)
            x, a0 = _decode_audio(container, stream, origin + start_q, far, path)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(path, f"cannot read ({_why(e)}); expected {_AUDIO_FILES}") from e
    i0 = max(0, round((origin + start_q - a0) * src_sr))
    available = Fraction(x.shape[1] - i0, src_sr)
    if duration_q is not None and available < duration_q - Fraction(1, src_sr):
        total = float(Fraction(x.shape[1], src_sr) + a0 - origin)
        raise MediaError(path, f"too short: {total:.3f} s of audio, {float(start_q + duration_q):.3f} s needed "
                               f"(from {float(start_q):.3f} s, {float(duration_q):.3f} s long)")
    x = x[:, i0:]
    try:
        x = _mix(x, channels)
    except ValueError as e:
        raise MediaError(path, str(e)) from e
    wav = torch.from_numpy(np.ascontiguousarray(x))
    if src_sr != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, src_sr, sample_rate)
    if duration_q is not None:
        n = round(duration_q * sample_rate)
        wav = torch.nn.functional.pad(wav[:, :n], (0, max(0, n - wav.shape[1])))
    return wav.contiguous()


def read_video(path: "str | os.PathLike[str]", *, num_frames: int, fps: "int | float | Fraction | str",
               size: tuple[int, int] | None = None, start: "float | Fraction" = 0) -> Tensor:
    """``num_frames`` frames at ``fps`` from ``start`` seconds, ``3 t h w`` in [-1, 1], with or
    without a sound track in the file."""
    path = Path(path)
    if num_frames < 1:
        raise ValueError(f"num_frames ({num_frames}) must be >= 1")
    fps_q = as_fraction(fps, "fps")
    start_q = as_fraction(start, "start (seconds)", positive=False)
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream; expected a video file (mp4, mkv, webm, mov)")
            stream = container.streams.video[0]
            t0 = _start(stream, container) + start_q
            frames = _decode_video(container, stream, frame_times(t0, num_frames, fps_q), size, path)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(path, f"cannot read ({_why(e)}); expected a video file (mp4, mkv, webm, mov)") from e
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


def read_image(path: "str | os.PathLike[str]", *, size: tuple[int, int] | None = None) -> Tensor:
    """A picture (png, jpg, ...) or the first frame of a video, ``3 h w`` in [-1, 1]."""
    path = Path(path)
    _check_file(path)
    expected = "expected an image (png, jpg, bmp, webp) or a video"
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, f"no picture in it; {expected}")
            frame = next((f for f in container.decode(container.streams.video[0])), None)
            if frame is None:
                raise MediaError(path, f"no decodable picture; {expected}")
            rgb = _to_rgb(frame, size)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(path, f"cannot read ({_why(e)}); {expected}") from e
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
