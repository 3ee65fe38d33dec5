"""What a user hands a pipeline, checked and fitted to its :class:`~avblocks.spec.AVSpec`.

``audio=``, ``video=`` and ``reference=`` take a path to a file or a tensor:

- **audio**: any file with sound (wav, flac, mp3, a video with an audio track), read through
  :func:`avblocks.data.single_stream.read_audio` at the spec's sample rate and channel count;
  or a tensor ``n``, ``ch n``, ``b n`` or ``b ch n`` already at that rate. A clip of
  ``num_frames`` frames takes the first ``num_frames / fps`` seconds (from ``start``); a
  shorter file is refused, saying how long it is. Silent audio (peak below -80 dBFS) is
  refused: there is nothing to follow.
- **video**: a video file read at the spec's frame rate and size (centre crop), its sound
  ignored; or a tensor ``3 t h w`` / ``b 3 t h w`` in [-1, 1] of the spec's size.
- **reference**: a picture or the first frame of a video, scaled to cover the spec's size and
  centre-cropped; or a tensor ``3 h w`` / ``b 3 h w`` in [-1, 1].

Every refusal is a :class:`~avblocks.data.MediaError` (a ``ValueError``) naming the file (or
the tensor's shape) and what was expected.
"""

import os
from fractions import Fraction
from pathlib import Path

from torch import Tensor

from avblocks.data.media import MediaError
from avblocks.data.single_stream import read_audio, read_image, read_video
from avblocks.spec import AVSpec

__all__ = ["load_audio", "load_reference", "load_video", "SILENCE_PEAK"]

SILENCE_PEAK = 1e-4
"""Audio whose absolute peak stays below this (-80 dBFS) counts as silent."""

Source = "str | os.PathLike[str] | Tensor"


def _is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def load_audio(source: Source, spec: AVSpec, *, num_frames: int | None = None,
               start: "float | Fraction" = 0) -> Tensor:
    """``b ch n`` at ``spec.sample_rate`` holding whole frames: exactly ``num_frames`` of them,
    or every whole frame of the source when ``num_frames`` is None."""
    spf = spec.samples_per_frame
    if _is_path(source):
        duration = None if num_frames is None else Fraction(num_frames) / spec.fps
        wav = read_audio(source, sample_rate=spec.sample_rate, channels=spec.channels, start=start,
                         duration=duration)[None]
        name = str(source)
    elif isinstance(source, Tensor):
        wav = source.detach().float()
        wav = {1: lambda x: x[None, None], 2: lambda x: x[None] if spec.channels > 1 else x[:, None],
               3: lambda x: x}.get(wav.ndim, lambda x: None)(wav)
        name = f"the audio tensor {tuple(source.shape)}"
        if wav is None or wav.shape[1] != spec.channels:
            raise MediaError(name, f"expected n, b n (mono) or b ch n with ch = {spec.channels}, "
                                   f"at {spec.sample_rate} Hz")
        if num_frames is not None:
            if wav.shape[-1] < num_frames * spf:
                raise MediaError(name, f"too short: {wav.shape[-1]} samples, {num_frames} frames need "
                                       f"{num_frames * spf} at {spec.sample_rate} Hz")
            wav = wav[..., : num_frames * spf]
    else:
        raise MediaError(repr(source), "audio= takes a path to a file with sound or a waveform tensor")
    frames = wav.shape[-1] // spf
    if frames == 0:
        raise MediaError(name, f"too short: {wav.shape[-1] / spec.sample_rate:.3f} s of audio, one video "
                               f"frame needs {float(1 / spec.fps):.3f} s")
    wav = wav[..., : frames * spf]
    peak = wav.abs().amax(dim=(1, 2))
    if bool((peak < SILENCE_PEAK).any()):
        raise MediaError(name, f"silent (peak {float(peak.min()):.2e} < {SILENCE_PEAK:g}, -80 dBFS): "
                               "audio-driven generation needs sound to follow")
    return wav.contiguous()


def load_video(source: Source, spec: AVSpec, *, start: "float | Fraction" = 0) -> Tensor:
    """``b 3 t h w`` in [-1, 1] with ``t = spec.num_frames`` at ``spec.fps`` and ``spec.size``."""
    if _is_path(source):
        return read_video(source, num_frames=spec.num_frames, fps=spec.fps, size=spec.size, start=start)[None]
    if isinstance(source, Tensor):
        video = source.detach().float()
        video = video[None] if video.ndim == 4 else video
        expected = (3, spec.num_frames, *spec.size)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise MediaError(f"the video tensor {tuple(source.shape)}",
                             f"expected (b,) 3 t h w = {expected} in [-1, 1]")
        return video
    raise MediaError(repr(source), "video= takes a path to a video file or a b 3 t h w tensor")


def load_reference(source: Source, spec: AVSpec) -> Tensor:
    """``b 3 h w`` in [-1, 1] at ``spec.size``."""
    if _is_path(source):
        return read_image(source, size=spec.size)[None]
    if isinstance(source, Tensor):
        image = source.detach().float()
        image = image[None] if image.ndim == 3 else image
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, *spec.size):
            raise MediaError(f"the reference tensor {tuple(source.shape)}",
                             f"expected (b,) 3 h w = {(3, *spec.size)} in [-1, 1]")
        return image
    raise MediaError(repr(source), "reference= takes a path to a picture or video, or a b 3 h w tensor")


def describe(source: Source) -> str:
    return str(Path(source)) if _is_path(source) else f"tensor {tuple(source.shape)}"
