"""Masks for tokens that carry times: a window in seconds, and the transpose of any mask.

- :class:`TimeWindowMask`: query ``i`` (at ``q_times[i]`` seconds) sees key ``j`` (at
  ``kv_times[j]``) iff ``|q_times[i] - kv_times[j]| <= window``. The two sequences may be two
  streams of different rates (video frames and audio latents): the window is in seconds, so
  it means the same span of sound and picture whatever the rates. It depends on time
  differences only, so shifting both streams by the same time leaves it unchanged (up to
  float rounding of a difference that lands exactly on ``window``: choose a window that falls
  between token spacings).
- :class:`TransposedMask`: the reverse direction of a cross-attention mask: key ``j`` of the
  original sees query ``i`` iff the original lets ``i`` see ``j``, so both directions of a
  bidirectional block use exactly the same pairs.

Both check the invariant of :mod:`avblocks.attention.masks`: every query sees at least one
key (``ValueError`` naming the first query that sees none).
"""

import torch

from avblocks.attention.masks import Mask
from avblocks.typing import Tensor

__all__ = ["TimeWindowMask", "TransposedMask"]


def _times(name: str, times: Tensor) -> Tensor:
    times = torch.as_tensor(times)
    if times.ndim != 1 or times.numel() == 0 or not times.is_floating_point():
        raise ValueError(f"{name} must be a non-empty 1-D float tensor of seconds, "
                         f"got shape {tuple(times.shape)} dtype {times.dtype}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError(f"{name} holds non-finite times")
    return times.detach().to(device="cpu", dtype=torch.float64)


def _check_rows(mask: Mask, what: str) -> None:
    rows = mask.dense().any(dim=1)
    if not bool(rows.all()):
        first = int((~rows).nonzero()[0])
        raise ValueError(f"{mask!r}: query {first} sees no key ({what})")


class TimeWindowMask(Mask):
    """Query ``i`` sees key ``j`` iff ``|q_times[i] - kv_times[j]| <= window`` (seconds).

    Args:
        q_times: time in seconds of every query token (1-D).
        kv_times: time in seconds of every key token (1-D).
        window: half-width of the window in seconds (>= 0; ``inf`` = every key).
    """

    def __init__(self, q_times: Tensor, kv_times: Tensor, window: float) -> None:
        if not window >= 0:
            raise ValueError(f"window ({window}) must be >= 0 seconds")
        self.q_times, self.kv_times = _times("q_times", q_times), _times("kv_times", kv_times)
        self.window = float(window)
        self.q_len, self.kv_len = len(self.q_times), len(self.kv_times)
        span = torch.cat([self.q_times, self.kv_times])
        self._is_full = float(span.max() - span.min()) <= self.window
        self._key = ("TimeWindowMask", tuple(self.q_times.tolist()), tuple(self.kv_times.tolist()),
                     self.window)
        self._tables: dict = {}
        _check_rows(self, f"no key within {self.window} s of its time")

    @property
    def is_full(self) -> bool:
        return self._is_full

    def key(self) -> tuple:
        return self._key

    def __repr__(self) -> str:
        return f"TimeWindowMask(q_len={self.q_len}, kv_len={self.kv_len}, window={self.window})"

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        tq = self._on_device(self.q_times, q_idx.device)[q_idx]
        tk = self._on_device(self.kv_times, kv_idx.device)[kv_idx]
        return (tq - tk).abs() <= self.window


class TransposedMask(Mask):
    """The transpose of ``mask``: query ``i`` here sees key ``j`` iff ``mask`` lets its query
    ``j`` see its key ``i`` (``q_len`` and ``kv_len`` swap)."""

    def __init__(self, mask: Mask) -> None:
        self.inner = mask
        self.q_len, self.kv_len = mask.kv_len, mask.q_len
        _check_rows(self, f"no query of {mask!r} sees it")

    @property
    def is_full(self) -> bool:
        return self.inner.is_full

    def key(self) -> tuple:
        return ("TransposedMask", self.inner.key())

    def __repr__(self) -> str:
        return f"TransposedMask({self.inner!r})"

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return self.inner.mask_mod(b, h, kv_idx, q_idx)
