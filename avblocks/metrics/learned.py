"""A slot for learned synchrony models: a user's own exports, loaded from local TorchScript files.

No package ships Synchformer or ImageBind weights and nothing is downloaded here, so these
metrics run only when you give a file; without one they refuse with a clear error
(:func:`require_model`), and the evaluation entry points report them as not measured.

- :class:`OffsetClassifier` (**DeSync**, MMAudio's use of Synchformer): the module takes a
  clip and returns logits over a fixed grid of audio-video offsets in seconds (Synchformer:
  21 offsets from -2.0 to +2.0 s in 0.2 s steps); the predicted offset is the grid value of
  the largest logit, and DeSync is the mean absolute predicted offset over clips (0 is
  perfect for pairs that are meant to be synchronous).
- :class:`AVSimilarity` (**ImageBind score**): the module embeds the video and the audio of a
  clip; the score is the mean cosine similarity of each clip's two embeddings.

The call convention both exports must follow (write a small wrapper around the real model
before ``torch.jit.script`` / ``torch.jit.trace``):

- ``module(video, audio)`` with ``video`` ``b t c h w`` (Synchformer's frame layout) in the
  value range given by ``value_range`` (default [-1, 1]), frames resized to ``input_size``
  when given; ``audio`` ``b n`` mono at ``sample_rate`` (resampled when the clip's rate
  differs). Frame-rate conversion is the export's business: it gets the clip's frames as
  they are, and the clip's fps is documented by the caller.
- :class:`OffsetClassifier`: returns ``b k`` logits; the grid comes from the module's
  attribute ``offsets_s`` (a list of floats, kept by TorchScript) or the ``offsets_s``
  argument, and its length must be ``k``.
- :class:`AVSimilarity`: returns a tuple ``(video b d, audio b d)``.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from avblocks.metrics.features import _resize_frames, check_video, check_waveform
from avblocks.metrics.torchscript_features import load_torchscript
from avblocks.typing import shapecheck

__all__ = ["AVSimilarity", "OffsetClassifier", "SYNCHFORMER_OFFSETS", "require_model"]

SYNCHFORMER_OFFSETS = tuple(round(-2.0 + 0.2 * i, 1) for i in range(21))
"""Synchformer's offset grid in seconds: -2.0, -1.8, ..., 2.0."""


def require_model(path: "str | Path | None", what: str, setting: str) -> Path:
    """``path`` as a :class:`Path`, or a clear refusal when none is given."""
    if path is None or str(path) == "":
        raise ValueError(f"{what} needs a local TorchScript export: set {setting} to its file. No "
                         "package ships these weights and avblocks downloads nothing.")
    return Path(path)


class _LearnedSync:
    def __init__(self, path: "str | Path | None", *, what: str, setting: str, sample_rate: int,
                 input_size: tuple[int, int] | None, value_range: tuple[float, float]):
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate ({sample_rate!r}) must be a positive int: the rate the export expects")
        if input_size is not None and (len(input_size) != 2 or min(input_size) < 1):
            raise ValueError(f"input_size ({input_size!r}) must be (h, w) with positive sizes")
        if not value_range[1] > value_range[0]:
            raise ValueError(f"value_range ({value_range!r}) must be (low, high) with high > low")
        self.path = require_model(path, what, setting)
        self.module = load_torchscript(self.path, what)
        self.sample_rate, self.input_size, self.value_range = sample_rate, input_size, value_range

    def _call(self, video: Tensor, audio: Tensor, sample_rate: int):
        x = check_video(video)
        if self.input_size is not None:
            x = _resize_frames(x, self.input_size)
        low, high = self.value_range
        x = (x + 1) * ((high - low) / 2) + low
        wave = check_waveform(audio, sample_rate)
        if sample_rate != self.sample_rate:
            wave = torchaudio.functional.resample(wave, sample_rate, self.sample_rate)
        with torch.no_grad():
            return self.module(rearrange(x, "b c t h w -> b t c h w"), wave)


class OffsetClassifier(_LearnedSync):
    """DeSync: a Synchformer-style offset classifier from a local TorchScript file (module doc).

    Args:
        path: the export (required; ``None`` is refused with the setting to give).
        sample_rate: the rate the export takes its audio at (Synchformer: 16000).
        offsets_s: the offset grid in seconds, when the export has no ``offsets_s`` attribute.
        input_size, value_range: what the export takes its frames as.
        setting: the configuration key named in the refusal.
    """

    def __init__(self, path: "str | Path | None", *, sample_rate: int, offsets_s: Sequence[float] | None = None,
                 input_size: tuple[int, int] | None = None, value_range: tuple[float, float] = (-1.0, 1.0),
                 setting: str = "path"):
        super().__init__(path, what="the DeSync offset classifier", setting=setting, sample_rate=sample_rate,
                         input_size=input_size, value_range=value_range)
        grid = getattr(self.module, "offsets_s", None) if offsets_s is None else offsets_s
        if grid is None or len(grid) < 2:
            raise ValueError(f"{self.path}: no offset grid: give offsets_s (Synchformer's is "
                             "SYNCHFORMER_OFFSETS) or export the module with an offsets_s attribute")
        self.offsets_s = torch.tensor([float(o) for o in grid], dtype=torch.float64)

    @shapecheck
    def predict(self, video: Float[Tensor, "b c t h w"], audio: Float[Tensor, "b n"],
                sample_rate: int) -> Float[Tensor, " b"]:
        """The predicted audio-video offset of each clip, in seconds."""
        logits = self._call(video, audio, sample_rate)
        if not isinstance(logits, Tensor) or logits.shape != (video.shape[0], len(self.offsets_s)):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"{self.path.name} returned {got}; expected logits "
                             f"({video.shape[0]}, {len(self.offsets_s)}) over the offset grid")
        return self.offsets_s[logits.argmax(dim=-1).cpu()]

    def desync(self, video: Tensor, audio: Tensor, sample_rate: int) -> float:
        """Mean absolute predicted offset in seconds (0: in sync)."""
        return float(self.predict(video, audio, sample_rate).abs().mean())


class AVSimilarity(_LearnedSync):
    """ImageBind-style audio-video similarity from a local TorchScript file (module doc)."""

    def __init__(self, path: "str | Path | None", *, sample_rate: int, input_size: tuple[int, int] | None = None,
                 value_range: tuple[float, float] = (-1.0, 1.0), setting: str = "path"):
        super().__init__(path, what="the audio-video similarity model", setting=setting, sample_rate=sample_rate,
                         input_size=input_size, value_range=value_range)

    @shapecheck
    def similarity(self, video: Float[Tensor, "b c t h w"], audio: Float[Tensor, "b n"],
                   sample_rate: int) -> Float[Tensor, " b"]:
        """Cosine similarity of each clip's video and audio embeddings."""
        out = self._call(video, audio, sample_rate)
        b = video.shape[0]
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(e, Tensor) and e.ndim == 2
                                                                  and e.shape[0] == b for e in out)
                and out[0].shape[1] == out[1].shape[1]):
            raise ValueError(f"{self.path.name} must return (video b d, audio b d) embeddings for a batch of {b}")
        return F.cosine_similarity(out[0].float(), out[1].float(), dim=-1)

    def score(self, video: Tensor, audio: Tensor, sample_rate: int) -> float:
        return float(self.similarity(video, audio, sample_rate).mean())
