"""Read a clip of video and its soundtrack from a container (mp4, mkv, webm, mov) with PyAV.

Alignment is by presentation timestamps, never by frame or sample counts:

- **Time origin**: ``t = 0`` is the start time of the first video stream (``stream.start_time``;
  the first decoded video frame when the container does not record it). A clip ``start`` is
  measured from there. An audio stream that starts earlier or later than the video keeps its
  own timestamps relative to that origin.
- **Video**: clip frame ``k`` owns the time ``[start + k / fps, start + (k + 1) / fps)``
  (and the audio of it, below); it shows the source frame displayed at the MIDDLE of that
  interval, ``start + (k + 1/2) / fps`` (:func:`frame_times`), i.e. the source frame whose
  presentation interval ``[pts_i, pts_{i+1})`` contains that time (the last frame lasts its
  own duration, or one average frame interval). So reading at another frame rate repeats or
  drops source frames by time, not by index, and a source frame is shown in the clip frame
  whose interval holds the middle of it: a flash and a beep that start at the same instant
  land in the same clip frame whenever the flash covers that frame's middle (sampling at the
  start of the interval showed a flash one clip frame after its beep whenever the source
  frame began in the first half of a clip frame, e.g. 24 or 29.97 fps read at 25). At the
  source's own rate and a start on its frame grid the middle picks frame ``k`` itself.
  Muxers round timestamps to their time base (1 ms in mkv/webm, so 1/24 s is stored as
  42 ms), so a pts is known only to half a tick: the comparison allows half a tick.
- **Audio**: the samples of ``[start, start + num_frames / fps)``, resampled to
  ``sample_rate``; exactly ``round(num_frames * sample_rate / fps)`` samples, so clip frame ``k``
  owns samples ``[k * sr / fps, (k + 1) * sr / fps)``. Decoded audio is treated as contiguous
  from the first decoded frame's timestamp (containers such as mkv round timestamps to 1 ms;
  trusting every frame's rounded pts would put clicks at frame joins); a jump of more than
  2 ms is a real gap and is filled with silence. The window is cut at the nearest output
  sample, so the residual offset is at most half an output sample.
- **Padding**: lossy audio codecs (AAC priming of 1024 samples, padding to whole codec frames,
  ms-rounded timestamps) may leave the audio a little short of the video at either end. Up
  to ``audio_slack`` seconds (default 0.1 s) missing at the head or tail is filled with
  zeros; more than that is a :class:`MediaError`.
- **Channels**: ``channels=1`` averages all source channels; asking for more channels than a
  mono source has repeats it; asking for fewer (but more than one) keeps the first ones
  (front left/right for the usual layouts). No matrix downmix.
- **Resampling**: ``torchaudio.functional.resample`` (windowed sinc, sample 0 of input and
  output at the same instant, so no delay is introduced) on a buffer with a 50 ms margin on
  both sides so the filter never sees the buffer edges inside the clip. The buffer starts a
  whole number of periods of the rate ratio (``src_sr / gcd(src_sr, sr)`` source samples, 320
  for 48 kHz -> 22.05 kHz) before the clip's first sample, so the clip's start is an output
  sample: a clip equals the whole track resampled once and cut at the clip whenever the
  clip starts on a source sample (a buffer started anywhere else shifts every output sample
  by up to half a sample, which changes high frequencies by tens of percent).
- **Size**: ``size=None`` keeps the native size; ``size=(h, w)`` scales so the frame covers
  ``(h, w)`` (the shorter side relative to the target fits exactly, aspect kept) with
  FFmpeg's area-averaging scaler (anti-aliased when shrinking), then crops the centre.
  Colours are converted with the colour matrix the stream declares (BT.601 when unset).
  Rotation metadata is ignored.
- **Seeking**: the demuxer seeks to the keyframe at or before ``start`` (and 0.25 s before it
  for audio, so codecs with overlapping frames are warm), so reading late in a long file does
  not decode it from the beginning. Decoding is single-threaded (parallelism belongs to
  DataLoader workers; codec threads cost more than they save on short clips).

Every problem with a file (missing, empty, unreadable, no video or audio stream, too short
for the request) raises :class:`MediaError`, a ``ValueError`` that names the path and reason.
A file FFmpeg cannot seek in (a truncated mkv has lost its index) is decoded from its start
instead (:mod:`avblocks.data.input_container`), and a request it cannot satisfy is reported
as a damaged or truncated file. A request outside sane bounds (``fps=1e6``, sides over 16384)
or whose decoded buffers would exceed the memory limit (``max_bytes``, else
:func:`avblocks.memory.memory_limit`) is refused before decoding
(:mod:`avblocks.data.request_bounds`).
"""

import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import torch
from torch import Tensor

from avblocks.data.input_container import open_input
from avblocks.data.request_bounds import check_request, decoded_bytes
from avblocks.memory import check_fits
from avblocks.timing import as_fraction

__all__ = ["MediaError", "MediaInfo", "Clip", "frame_times", "probe", "read_clip"]

_AUDIO_MARGIN = Fraction(1, 20)  # resampler support on both sides of the window
_AUDIO_WARMUP = Fraction(1, 5)  # decode this much before the margin after a seek
_GAP = Fraction(1, 500)  # a timestamp jump beyond 2 ms is a real gap, not rounding


class MediaError(ValueError):
    """A media file that cannot give what was asked; ``path`` and ``reason`` say why."""

    def __init__(self, path: "str | os.PathLike[str]", reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class Clip(NamedTuple):
    """A decoded clip: ``video`` ``c t h w`` in [-1, 1]; ``audio`` ``ch n`` (nominally [-1, 1])."""

    video: Tensor
    audio: Tensor
    fps: Fraction
    sample_rate: int


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a file. Times are seconds on the container clock.

    ``audio_start`` is the time of the first decoded audio sample (what :func:`read_clip`
    can actually return), which may be later than the stream's declared start time.

    ``video_end``/``audio_end`` come from the packets actually present at the end of the
    file (not only the header), so a truncated file reports what it really holds.
    """

    path: str
    width: int
    height: int
    fps: float
    video_start: float
    video_end: float
    sample_rate: int
    audio_channels: int
    audio_start: float
    audio_end: float
    video_codec: str
    audio_codec: str

    @property
    def usable(self) -> tuple[float, float]:
        """``(first, last)`` seconds, from the video origin, where both video and audio exist."""
        first = max(0.0, self.audio_start - self.video_start)
        last = min(self.video_end, self.audio_end) - self.video_start
        return first, last

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MediaInfo":
        return cls(**d)


def _why(e: Exception) -> str:
    """FFmpeg's own words for an error, without the path it repeats."""
    if isinstance(e, av.error.FFmpegError) and e.strerror:
        return f"{type(e).__name__}: {e.strerror}"
    return f"{type(e).__name__}: {e}"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(path, "no such file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")


def _streams(container, path: Path):
    if not container.streams.video:
        raise MediaError(path, "no video stream")
    if not container.streams.audio:
        raise MediaError(path, "no audio stream")
    return container.streams.video[0], container.streams.audio[0]


def _start(stream, container) -> Fraction:
    """The stream's first presentation time in seconds."""
    if stream.start_time is not None:
        return stream.start_time * stream.time_base
    _rewind(container, stream)
    for frame in container.decode(stream):
        if frame.pts is not None:
            return frame.pts * frame.time_base
    return Fraction(0)


def _rewind(container, stream) -> None:
    """Seek ``stream`` to its very first packet. ``container.seek(0)`` is not enough: it skips
    packets with negative timestamps (AAC/Opus priming), and an audio decoder that misses
    them decodes the first frame without its overlap, i.e. wrong."""
    floor = min(stream.start_time or 0, 0) - int(10 / stream.time_base)
    try:
        container.seek(floor, stream=stream, backward=True)
    except av.error.FFmpegError:
        container.seek(0)


def frame_times(start: Fraction, num_frames: int, fps: Fraction) -> list[Fraction]:
    """The instants clip frames show: the middle of each frame's interval,
    ``start + (k + 1/2) / fps`` for ``k < num_frames`` (exact; see the module doc)."""
    return [start + (2 * k + 1) / (2 * fps) for k in range(num_frames)]


def _frame_time(frame) -> Fraction:
    return frame.pts * frame.time_base


def _packet_end(container, stream, estimate: Fraction | None) -> Fraction | None:
    """End time of the last packet of ``stream``, demuxing from a few seconds before the
    estimated end (or from the beginning when that fails)."""
    tb = stream.time_base
    end = None
    for seek_to in (estimate - 3, None) if estimate is not None else (None,):
        try:
            if seek_to is not None and seek_to > 0:
                container.seek(int(seek_to / tb), stream=stream, backward=True)
            else:
                container.seek(0)
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = (packet.pts + (packet.duration or 0)) * tb
                end = t if end is None else max(end, t)
        except av.error.FFmpegError:
            end = None
            continue
        if end is not None:
            return end
    return end


def probe(path: "str | os.PathLike[str]") -> MediaInfo:
    """Open ``path``, check it has a decodable video and audio stream, and measure them.

    Decodes the first video and audio frame (so a file whose codec cannot be decoded fails
    here, not in training) and demuxes the last seconds of each stream to find where the
    packets really end. Raises :class:`MediaError` on any problem.
    """
    path = Path(path)
    _check_file(path)
    try:
        with open_input(path) as container:
            vstream, astream = _streams(container, path)
            v0 = _start(vstream, container)
            _rewind(container, vstream)
            if next(container.decode(vstream), None) is None:
                raise MediaError(path, "video stream has no decodable frames")
            _rewind(container, astream)
            first_audio = next((f for f in container.decode(astream) if f.pts is not None), None)
            if first_audio is None:
                raise MediaError(path, "audio stream has no decodable frames")
            # the first *decoded* sample, not the header's start time: decoders drop priming
            # (and FFmpeg's mkv demuxer may drop a whole first frame after a start offset)
            a0 = _frame_time(first_audio)
            estimate = None
            if container.duration is not None:
                estimate = Fraction(container.duration, av.time_base) + Fraction(
                    container.start_time or 0, av.time_base
                )
            v_end = _packet_end(container, vstream, estimate)
            a_end = _packet_end(container, astream, estimate)
            if v_end is None or a_end is None:
                raise MediaError(path, "no packets with timestamps")
            rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
            return MediaInfo(
                path=str(path),
                width=vstream.codec_context.width,
                height=vstream.codec_context.height,
                fps=float(rate) if rate else 0.0,
                video_start=float(v0),
                video_end=float(v_end),
                sample_rate=int(astream.codec_context.sample_rate),
                audio_channels=int(astream.codec_context.channels),
                audio_start=float(a0),
                audio_end=float(a_end),
                video_codec=vstream.codec_context.name,
                audio_codec=astream.codec_context.name,
            )
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, StopIteration, ValueError) as e:
        raise MediaError(path, f"cannot read ({_why(e)})") from e


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    """``h w 3`` uint8; scaled to cover ``size`` then centre-cropped (see module doc)."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    h, w = size
    scale = max(h / frame.height, w / frame.width)
    sh = max(h, round(frame.height * scale))
    sw = max(w, round(frame.width * scale))
    rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA")
    arr = rgb.to_ndarray()
    top, left = (sh - h) // 2, (sw - w) // 2
    return arr[top : top + h, left : left + w]


def _decode_video(container, stream, times: list[Fraction], size, path: Path) -> np.ndarray:
    """One ``h w 3`` frame per target time: the source frame whose interval holds it."""
    default_dur = Fraction(1) / Fraction(stream.average_rate or stream.guessed_rate or 25)
    stream_start = _start(stream, container)
    seek_pts = math.floor(times[0] / stream.time_base)
    # muxers round timestamps to their time base (1 ms in mkv/webm): a pts is only known to
    # half a tick, so a target that close before a frame's pts belongs to that frame
    half_tick = stream.time_base / 2
    out: list[np.ndarray | None] = [None] * len(times)
    for attempt in ("seek", "from_start"):
        if attempt == "seek" and seek_pts > (stream.start_time or 0):
            container.seek(seek_pts, stream=stream, backward=True)
        else:
            _rewind(container, stream)
            attempt = "from_start"
        k, prev, prev_rgb, first = 0, None, None, None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = _frame_time(frame)
            if first is None:
                first = t
                if t > times[0] + half_tick and attempt == "seek":
                    break  # the seek overshot: decode from the start instead
            while k < len(times) and times[k] + half_tick < t:
                if prev is None:
                    if t - times[k] > default_dur:
                        raise MediaError(
                            path,
                            f"no video frame at {float(times[k] - stream_start):.4f} s (first"
                            f" decodable frame at {float(t - stream_start):.4f} s)",
                        )
                    # first frame a little after the declared start (e.g. dropped leading
                    # B-frames): it stands in for the times just before it
                    prev, prev_rgb = frame, None
                if prev_rgb is None:
                    prev_rgb = _to_rgb(prev, size)
                out[k] = prev_rgb
                k += 1
            if k == len(times):
                break
            prev, prev_rgb = frame, None
            prev_end = t + (frame.duration * frame.time_base if frame.duration else default_dur)
        else:
            # end of stream: the last frame holds the targets inside its own duration
            while k < len(times) and prev is not None and times[k] + half_tick < prev_end:
                if prev_rgb is None:
                    prev_rgb = _to_rgb(prev, size)
                out[k] = prev_rgb
                k += 1
            if k < len(times):
                end = float(prev_end) if prev is not None else float(stream_start)
                raise MediaError(
                    path,
                    f"too short: needs a video frame at {float(times[k] - stream_start):.4f} s "
                    f"but the video ends at {end - float(stream_start):.4f} s",
                )
        if k == len(times):
            return np.stack(out)  # type: ignore[arg-type]
    raise MediaError(path, "could not locate the requested video frames")


def _samples(frame) -> np.ndarray:
    """``ch n`` float32 from any PyAV audio frame format."""
    arr = frame.to_ndarray()
    ch = frame.layout.nb_channels
    if not frame.format.is_planar:
        arr = arr.reshape(-1, ch).T
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype == np.int32:
        arr = arr.astype(np.float32) / 2147483648.0
    elif arr.dtype == np.int64:
        arr = (arr / 9223372036854775808.0).astype(np.float32)
    elif arr.dtype == np.uint8:
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    return np.ascontiguousarray(arr, dtype=np.float32)


def _decode_audio(container, stream, t0: Fraction, t1: Fraction, path: Path):
    """Decoded samples covering ``[t0, t1)`` as far as the stream has them: ``(x ch n, a0)``,
    where ``a0`` is the time of ``x[:, 0]``."""
    src_sr = stream.codec_context.sample_rate
    seek_t = t0 - _AUDIO_WARMUP
    start = stream.start_time or 0
    for attempt in ("seek", "from_start"):
        seek_pts = int(math.floor(seek_t / stream.time_base))
        if attempt == "seek" and seek_pts > start:
            container.seek(seek_pts, stream=stream, backward=True)
        else:
            _rewind(container, stream)
            attempt = "from_start"
        chunks: list[np.ndarray] = []
        a0, count = None, 0
        for frame in container.decode(stream):
            if frame.pts is None or frame.samples == 0:
                continue
            t = _frame_time(frame)
            x = _samples(frame)
            if a0 is None:
                if t > t0 and attempt == "seek":
                    break  # the seek overshot: decode from the start instead
                a0 = t
            else:
                drift = t - (a0 + Fraction(count, src_sr))
                if drift > _GAP:  # a real gap in the stream: silence
                    gap = round(drift * src_sr)
                    chunks.append(np.zeros((x.shape[0], gap), np.float32))
                    count += gap
                elif drift < -_GAP:  # overlap: drop what was already covered
                    x = x[:, min(x.shape[1], round(-drift * src_sr)) :]
            chunks.append(x)
            count += x.shape[1]
            if a0 + Fraction(count, src_sr) >= t1:
                break
        if a0 is not None:
            return np.concatenate(chunks, axis=1), a0
    raise MediaError(path, "audio stream has no decodable samples")


def _declared(container) -> str:
    seconds = container.declared_duration
    return "no duration" if seconds is None else f"{seconds:.3f} s"


def _check_decoded_size(path: Path, vstream, astream, num_frames: int, size, duration: Fraction,
                        max_bytes: int | None) -> None:
    h, w = size if size is not None else (vstream.codec_context.height, vstream.codec_context.width)
    rate = astream.codec_context.sample_rate or 0
    seconds = float(duration + 2 * (_AUDIO_MARGIN + _AUDIO_WARMUP))
    nbytes = decoded_bytes(num_frames=num_frames, height=h, width=w, seconds=seconds, source_rate=rate,
                           source_channels=astream.codec_context.channels)
    try:
        check_fits(f"reading {num_frames} frames of {h} x {w} and {float(duration):.3f} s of audio",
                   nbytes, max_bytes)
    except ValueError as e:
        raise MediaError(path, str(e)) from None


def _mix(x: np.ndarray, channels: int) -> np.ndarray:
    src = x.shape[0]
    if channels == src:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    if src == 1:
        return np.repeat(x, channels, axis=0)
    if src > channels:
        return x[:channels]
    raise ValueError(f"cannot make {channels} audio channels from {src}")


def read_clip(
    path: "str | os.PathLike[str]",
    *,
    start: "float | Fraction" = 0.0,
    num_frames: int,
    fps: "int | float | Fraction",
    sample_rate: int,
    size: tuple[int, int] | None = None,
    channels: int = 1,
    audio_slack: float = 0.1,
    max_bytes: int | None = None,
) -> Clip:
    """Read ``num_frames`` video frames at ``fps`` from ``start`` seconds and their audio.

    Returns :class:`Clip` with ``video`` ``3 t h w`` float32 in [-1, 1] and ``audio``
    ``channels n`` float32 with ``n = round(num_frames * sample_rate / fps)``. See the module
    docstring for every alignment, padding, resizing and channel choice. ``max_bytes``: the
    most the decoded buffers may take (default: :func:`avblocks.memory.memory_limit`).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames ({num_frames}) must be >= 1")
    fps_q = as_fraction(fps, "fps")
    start_q = as_fraction(start, "start (seconds)", positive=False)
    if sample_rate < 1:
        raise ValueError(f"sample_rate ({sample_rate}) must be >= 1")
    if channels < 1:
        raise ValueError(f"channels ({channels}) must be >= 1")
    if audio_slack < 0:
        raise ValueError(f"audio_slack ({audio_slack}) must be >= 0 seconds")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size ({size}) must be None or (h, w) with h, w >= 1")
    check_request(num_frames=num_frames, fps=fps_q, sample_rate=sample_rate, size=size, channels=channels)
    path = Path(path)
    _check_file(path)
    duration = num_frames / fps_q
    n_out = round(duration * sample_rate)
    slack = as_fraction(audio_slack, "audio_slack", positive=False)
    try:
        with open_input(path) as container:
            vstream, astream = _streams(container, path)
            _check_decoded_size(path, vstream, astream, num_frames, size, duration, max_bytes)
            origin = _start(vstream, container)
            t0 = origin + start_q
            frames = _decode_video(container, vstream, frame_times(t0, num_frames, fps_q), size, path)
            src_sr = astream.codec_context.sample_rate
            x, a0 = _decode_audio(
                container, astream, t0 - _AUDIO_MARGIN, t0 + duration + _AUDIO_MARGIN, path
            )
    except MediaError as e:
        if container.seek_failed:  # the index is gone: what was asked may lie past the cut
            raise MediaError(path, f"damaged or truncated: FFmpeg cannot seek in it (header: "
                             f"{_declared(container)}), so it was decoded from the start, and {e.reason}") from e
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(path, f"cannot read ({_why(e)})") from e

    a_end = a0 + Fraction(x.shape[1], src_sr)
    head, tail = a0 - t0, t0 + duration - a_end
    if head > slack or tail > slack:
        raise MediaError(
            path,
            f"audio does not cover the clip [{float(start_q):.4f}, {float(start_q + duration):.4f}) s:"
            f" it spans [{float(a0 - origin):.4f}, {float(a_end - origin):.4f}) s"
            f" (allowed slack {float(slack)} s)",
        )
    # a buffer on the source grid from b0 ~ t0 - margin, zero-padded where the stream has nothing
    period = src_sr // math.gcd(src_sr, sample_rate)  # source samples per whole output grid step
    clip_start = (t0 - a0) * src_sr  # where the clip starts in x, in source samples
    i0 = math.floor(clip_start - _AUDIO_MARGIN * src_sr)
    if clip_start.denominator == 1:  # start the buffer a whole number of periods before the clip
        i0 -= (i0 - int(clip_start)) % period
    length = math.ceil((duration + 2 * _AUDIO_MARGIN) * src_sr) + 1 + period
    buf = np.zeros((x.shape[0], length), np.float32)
    lo, hi = max(i0, 0), min(i0 + length, x.shape[1])
    if hi > lo:
        buf[:, lo - i0 : hi - i0] = x[:, lo:hi]
    b0 = a0 + Fraction(i0, src_sr)
    try:
        buf = _mix(buf, channels)
    except ValueError as e:
        raise MediaError(path, str(e)) from e
    wav = torch.from_numpy(buf)
    if src_sr != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, src_sr, sample_rate)
    j0 = round((t0 - b0) * sample_rate)
    audio = wav[:, j0 : j0 + n_out].contiguous()
    assert audio.shape[1] == n_out, (audio.shape, n_out)

    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)
    return Clip(video=video, audio=audio, fps=fps_q, sample_rate=sample_rate)
