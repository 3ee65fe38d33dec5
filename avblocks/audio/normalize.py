"""Invertible affine map of log-mel values to about ``[-1, 1]`` (for autoencoders / diffusion).

``normalize(x) = 2 * (x - low) / (high - low) - 1`` and ``denormalize`` is its exact inverse
(no clamping, so a round trip is exact up to float rounding and out-of-range values pass
through).

- ``low = log(log_floor)``: the value of silence, mapped to exactly ``-1``.
- ``high = power * log(sum(window)) + log(max filterbank weight)``: the log-mel of a
  full-scale (amplitude 1) complex exponential landing on a filter's peak, i.e. the
  largest value one STFT bin can reach for a waveform in ``[-1, 1]``. For the vocos preset
  this is ``log(512) = 6.24``; real full-scale tones reach about ``5.3``-``6.3`` (a tone
  between bins leaks into neighbours under a wide filter), so loud audio lands up to about
  ``1.01``, typical audio well inside ``[-1, 1]``.

Both constants follow from the :class:`MelConfig`, so the map changes with the settings
(power 2 doubles ``high``; Slaney-normalised filters lower it).
"""

import math

import torch
from torch import nn

from avblocks.audio.mel import MelConfig
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["LogMelNormalizer"]


def _default_high(mel: MelConfig) -> float:
    window_sum = float(mel.window_tensor(dtype=torch.float64, device="cpu").sum())  # a number, not a buffer
    return mel.power * math.log(window_sum) + math.log(float(mel.filterbank().max()))


class LogMelNormalizer(nn.Module):
    """Affine map ``[low, high] -> [-1, 1]`` of log-mel values (see module doc).

    Args:
        mel: the settings the log-mels are made with; gives ``low`` and the default ``high``.
        high: override the upper log-mel value (mapped to ``+1``).
    """

    def __init__(self, *, mel: MelConfig, high: float | None = None):
        super().__init__()
        self.mel = mel
        self.low = mel.log_silence
        self.high = _default_high(mel) if high is None else float(high)
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must exceed low = log(log_floor) ({self.low})")

    @shapecheck
    def normalize(self, log_mel: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """Log-mel values -> about ``[-1, 1]``."""
        return (log_mel - self.low) * (2.0 / (self.high - self.low)) - 1.0

    @shapecheck
    def denormalize(self, values: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """Inverse of :meth:`normalize`."""
        return (values + 1.0) * ((self.high - self.low) / 2.0) + self.low

    @shapecheck
    def forward(self, log_mel: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return self.normalize(log_mel)

    def extra_repr(self) -> str:
        return f"low={self.low:.4f}, high={self.high:.4f}"
