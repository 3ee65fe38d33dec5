"""One description of a sounding video: :class:`AVSpec`.

Every reader, writer, transform, dataset, codec and pipeline takes its frame rate, sample
rate, clip length, frame size and mel settings from an :class:`AVSpec` (or from the fields
of one); nothing else keeps a copy of them, so the spectrogram, the mp4 timestamps and the
dataset can never disagree about what "frame ``k``" means.

Choices:

- **Exact rates.** ``fps`` is a :class:`fractions.Fraction`, read by the one conversion
  :func:`avblocks.timing.as_fraction` (``"30000/1001"`` for NTSC).
- **Frame ``k`` owns the audio of** ``[k / fps, (k + 1) / fps)``: samples
  ``[k * sr / fps, (k + 1) * sr / fps)``. The spec requires a whole number of spectrogram
  columns per frame (``sr / (fps * hop)``), which also makes ``sr / fps`` whole; fractional
  frame rates are legal whenever that holds (``MelConfig.vocos()`` at 24 kHz with hop 256
  takes ``fps = 93.75 / w``).
- ``size`` is ``(height, width)``; ``channels`` the audio channels the model sees (readers
  average a source down to it or repeat a mono source up to it).
- Serialised by :meth:`AVSpec.to_dict` with ``fps`` as a string ``"p/q"`` (JSON has no
  exact fractions); :meth:`AVSpec.from_dict` reads it back exactly.
"""

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from avblocks.audio.mel import MelConfig
from avblocks.timing import as_fraction, frame_columns

__all__ = ["AVSpec", "as_fraction", "frame_columns"]


@dataclass(frozen=True, kw_only=True)
class AVSpec:
    """A sounding-video clip as every part of avblocks sees it (see the module doc).

    Args:
        fps: video frame rate (anything :func:`as_fraction` reads; stored as a Fraction).
        sample_rate: audio sample rate in Hz; must equal ``mel.sample_rate``.
        num_frames: video frames per clip.
        size: ``(height, width)`` of a frame in pixels.
        channels: audio channels.
        mel: the log-mel settings of the video-like audio.
    """

    fps: Fraction
    sample_rate: int
    num_frames: int
    size: tuple[int, int]
    channels: int = 1
    mel: MelConfig = field(default_factory=MelConfig.vocos)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", as_fraction(self.fps, "fps"))
        for name in ("sample_rate", "num_frames", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AVSpec.{name} ({value!r}) must be an integer >= 1")
        size = tuple(self.size) if isinstance(self.size, (tuple, list)) else self.size
        if (not isinstance(size, tuple) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
            raise ValueError(f"AVSpec.size ({self.size!r}) must be (height, width), two integers >= 1")
        object.__setattr__(self, "size", size)
        if not isinstance(self.mel, MelConfig):
            raise ValueError(f"AVSpec.mel must be a MelConfig, got {type(self.mel).__name__}")
        if self.mel.sample_rate != self.sample_rate:
            raise ValueError(f"AVSpec.sample_rate ({self.sample_rate}) differs from mel.sample_rate "
                             f"({self.mel.sample_rate}); the spectrogram is made at the clip's rate")
        frame_columns(self.sample_rate, self.fps, self.mel.hop)

    # ------------------------------------------------------------------ derived
    @property
    def frame_columns(self) -> int:
        """``w``: spectrogram columns per video frame."""
        return frame_columns(self.sample_rate, self.fps, self.mel.hop)

    @property
    def samples_per_frame(self) -> int:
        """Audio samples each video frame owns, ``sample_rate / fps`` (whole by construction)."""
        return self.frame_columns * self.mel.hop

    @property
    def num_samples(self) -> int:
        """Audio samples of a clip: ``num_frames * samples_per_frame``."""
        return self.num_frames * self.samples_per_frame

    @property
    def duration(self) -> Fraction:
        """Seconds of a clip, exactly: ``num_frames / fps``."""
        return self.num_frames / self.fps

    def frame_of_sample(self, sample: int) -> int:
        """The video frame that owns audio sample ``sample``."""
        return sample // self.samples_per_frame

    def with_frames(self, num_frames: int) -> "AVSpec":
        """The same spec for clips of ``num_frames`` frames."""
        return dataclasses.replace(self, num_frames=num_frames)

    # ------------------------------------------------------------- serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``fps`` as ``"p/q"``, ``size`` as a list, ``mel`` as its fields."""
        return {"fps": f"{self.fps.numerator}/{self.fps.denominator}", "sample_rate": self.sample_rate,
                "num_frames": self.num_frames, "size": list(self.size), "channels": self.channels,
                "mel": dataclasses.asdict(self.mel)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AVSpec":
        """Inverse of :meth:`to_dict`; unknown or missing keys are a ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"an AVSpec dict is expected, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"AVSpec: unknown key(s) {unknown}; known keys are {sorted(known)}")
        mel = data.get("mel")
        if not isinstance(mel, dict):
            raise ValueError(f"AVSpec: 'mel' must be a dict of MelConfig fields, got {mel!r}")
        mel_fields = {f.name for f in dataclasses.fields(MelConfig)}
        bad = sorted(set(mel) - mel_fields)
        if bad:
            raise ValueError(f"AVSpec.mel: unknown key(s) {bad}")
        values = dict(data) | {"mel": MelConfig(**mel), "size": tuple(data.get("size", ()))}
        missing = sorted(n for n in ("fps", "sample_rate", "num_frames", "size") if n not in data)
        if missing:
            raise ValueError(f"AVSpec: missing key(s) {missing}")
        return cls(**values)
