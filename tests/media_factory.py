"""Make small real media files for tests, with PyAV, independently of avblocks' own writer.

``make_media`` encodes a synthetic sounding video with a known timeline: video frame ``k``
is a flat grey of level ``levels[k]`` (default: black, with a white flash at ``flash``), and
the soundtrack is silence (or a 440 Hz ``tone``) with a 1 kHz beep over exactly
``[beep_t, beep_t + event_frames / fps)``; the flash lasts ``event_frames`` frames too.
``colors``/``images`` replace the grey levels (see :func:`index_colors` to stamp each frame
with its index). Stream start offsets (``video_start``/``audio_start`` seconds) are written as timestamps, so
the container records them (edit lists in mp4/mov, absolute timestamps in mkv/webm).
"""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# (container format, video codec, audio codec) per extension
FORMATS = {
    "mp4": ("mp4", "libx264", "aac"),
    "mov": ("mov", "libx264", "aac"),
    "mkv": ("matroska", "libx264", "aac"),
    "webm": ("webm", "libvpx", "libopus"),
}


def make_media(
    path,
    *,
    fps=Fraction(25),
    sample_rate=16000,
    num_frames=12,
    size=(32, 32),
    flash: int | None = None,
    beep_t: float | Fraction | None = None,
    levels=None,
    video_start: Fraction = Fraction(0),
    audio_start: Fraction = Fraction(0),
    audio: bool = True,
    audio_seconds: float | None = None,
    channels: int = 1,
    colors=None,
    images=None,
    gop: int | None = None,
    tone: bool = False,
    event_frames: int = 1,
):
    """Write ``path`` (format from its extension) and return it as a Path."""
    path = Path(path)
    fmt, vcodec, acodec = FORMATS[path.suffix[1:]]
    fps = Fraction(fps)
    h, w = size
    if levels is None:
        on = range(flash, flash + event_frames) if flash is not None else ()
        levels = [255 if k in on else 0 for k in range(num_frames)]
    with av.open(str(path), "w", format=fmt) as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if vcodec == "libx264":
            vs.options = {"crf": "10", "preset": "ultrafast"}
            if gop is not None:
                vs.options = {**vs.options, "g": str(gop), "keyint_min": str(gop)}
        else:
            vs.bit_rate = 2_000_000
        a_s = None
        if audio:
            a_s = c.add_stream(acodec, rate=sample_rate)
            a_s.layout = "mono" if channels == 1 else "stereo"
            a_s.bit_rate = 128_000
        v_off = video_start * fps
        assert v_off.denominator == 1, "video_start must be a whole number of frames"
        for k in range(num_frames):
            if images is not None:
                img = np.ascontiguousarray(images[k])
            elif colors is not None:
                img = np.empty((h, w, 3), np.uint8)
                img[:] = colors[k]
            else:
                img = np.full((h, w, 3), levels[k], np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = int(v_off) + k, 1 / fps
            c.mux(vs.encode(frame))
        c.mux(vs.encode(None))
        if a_s is not None:
            secs = Fraction(audio_seconds) if audio_seconds is not None else num_frames / fps
            n = round(secs * sample_rate)
            wav = np.zeros(n, np.float32)
            if tone:  # a steady 440 Hz tone under everything
                wav += 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate).astype(np.float32)
            if beep_t is not None:
                # beep_t is on the same clock as the video (absolute), audio starts at audio_start
                s0 = round((Fraction(beep_t) - audio_start) * sample_rate)
                s1 = s0 + round(event_frames * sample_rate / fps)
                t = np.arange(s1 - s0) / sample_rate
                wav[s0:s1] = 0.8 * np.sin(2 * np.pi * 1000 * t)
            wav = np.repeat(wav[None], channels, axis=0)
            a_off = audio_start * sample_rate
            assert a_off.denominator == 1
            layout = "mono" if channels == 1 else "stereo"
            for i in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wav[:, i : i + 1024]), format="fltp", layout=layout
                )
                af.sample_rate, af.pts = sample_rate, int(a_off) + i
                af.time_base = Fraction(1, sample_rate)
                c.mux(a_s.encode(af))
            c.mux(a_s.encode(None))
    return path


def index_colors(num_frames):
    """A distinct flat colour per frame: red and green digits of the frame index (base 15)."""
    return [(8 + 16 * (k % 15), 8 + 16 * (k // 15 % 15), 128) for k in range(num_frames)]


def decode_index(video):
    """Inverse of :func:`index_colors` for a ``3 t h w`` clip in [-1, 1]: index per frame."""
    rgb = (np.asarray(video).mean(axis=(2, 3)) + 1) * 127.5
    r = np.rint((rgb[0] - 8) / 16).astype(int)
    g = np.rint((rgb[1] - 8) / 16).astype(int)
    return r + 15 * g


def frame_energy(audio, fps, sample_rate):
    """Energy of each clip frame's samples ``[k*sr/fps, (k+1)*sr/fps)`` (exact rationals)."""
    x = np.asarray(audio).reshape(-1, np.asarray(audio).shape[-1]).mean(0)
    fps = Fraction(fps)
    t = int(np.floor(len(x) * fps / sample_rate))
    bounds = [int(np.floor(k * sample_rate / fps)) for k in range(t + 1)]
    return np.array([float((x[a:b] ** 2).sum()) for a, b in zip(bounds[:-1], bounds[1:])])
