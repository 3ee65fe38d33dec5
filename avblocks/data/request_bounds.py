"""Sane bounds of a clip request, and what decoding it will allocate, checked before decoding.

A request far outside what any video holds (``fps=1e6``, ``size=(10000, 10000)``) used to
fail late and misleadingly: an empty soundtrack, or a ``MemoryError`` after 5 GB were
allocated. :func:`check_request` refuses it first, with a ``ValueError`` naming the value and
the bound; :func:`decoded_bytes` estimates the buffers :func:`avblocks.data.media.read_clip`
makes, which is checked against the memory limit (:func:`avblocks.memory.check_fits`) once
the file's native size and audio rate are known.

Bounds (generous: they reject nonsense, not unusual media):

- frame rate in ``(0, MAX_FPS]``; output sample rate in ``[1, MAX_SAMPLE_RATE]``;
- frame sides in ``[1, MAX_SIDE]``; audio channels in ``[1, MAX_CHANNELS]``;
- the clip must hold at least one output audio sample.
"""

from fractions import Fraction

__all__ = ["MAX_CHANNELS", "MAX_FPS", "MAX_SAMPLE_RATE", "MAX_SIDE", "check_request", "decoded_bytes"]

MAX_FPS = 1000
"""The highest frame rate a request may ask for."""
MAX_SAMPLE_RATE = 384_000
"""The highest audio sample rate a request may ask for."""
MAX_SIDE = 16_384
"""The longest frame side (pixels) a request may ask for."""
MAX_CHANNELS = 64
"""The most audio channels a request may ask for."""

# bytes per output pixel: the uint8 RGB frames (3), their stacked copy (3) and float32 (12)
_PIXEL_BYTES = 18
# bytes per source audio sample and channel: decoded float32 chunks, their concatenation and
# the resampling buffer
_SAMPLE_BYTES = 12


def check_request(*, num_frames: int, fps: Fraction, sample_rate: int, size: tuple[int, int] | None,
                  channels: int) -> None:
    """Refuse a request outside the bounds of the module docstring (``ValueError``)."""
    if not 0 < fps <= MAX_FPS:
        raise ValueError(f"fps ({fps}) must lie in (0, {MAX_FPS}]")
    if not 1 <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate ({sample_rate}) must lie in [1, {MAX_SAMPLE_RATE}]")
    if size is not None and not all(1 <= s <= MAX_SIDE for s in size):
        raise ValueError(f"size ({size}) must be None or (h, w) with sides in [1, {MAX_SIDE}]")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels ({channels}) must lie in [1, {MAX_CHANNELS}]")
    if round(num_frames * sample_rate / fps) < 1:
        raise ValueError(f"{num_frames} frame(s) at {fps} fps hold no audio sample at {sample_rate} Hz; "
                         "ask for more frames or a lower frame rate")


def decoded_bytes(*, num_frames: int, height: int, width: int, seconds: float, source_rate: int,
                  source_channels: int) -> int:
    """What decoding ``num_frames`` frames of ``height x width`` and ``seconds`` of audio takes."""
    video = num_frames * height * width * _PIXEL_BYTES
    audio = int(seconds * source_rate) * max(source_channels, 1) * _SAMPLE_BYTES
    return video + audio
