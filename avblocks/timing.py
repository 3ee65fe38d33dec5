"""Exact rates and times: the one conversion to :class:`~fractions.Fraction`, and the
frame / sample / spectrogram-column arithmetic every part of avblocks shares.

- :func:`as_fraction`: ints, Fractions and strings (``"30000/1001"``, ``"29.97"``,
  ``"93.75/4"``) are exact; a float becomes the nearest fraction whose denominator is at most
  ``10**6``, so ``30000 / 1001`` (a float) gives back ``Fraction(30000, 1001)``, ``29.97``
  gives ``2997/100`` and ``22050 / 2816`` gives ``11025/1408``. NTSC video is
  ``30000/1001``: write that (or the string) rather than ``29.97`` when you mean it.
- :func:`frame_columns`: spectrogram columns per video frame, ``sr / (fps * hop)``, which
  video-like audio needs whole; the error names the nearest hops and sample rates that work.

No imports from the rest of avblocks, so any module can use it.
"""

import math
from fractions import Fraction

__all__ = ["as_fraction", "frame_columns"]


def as_fraction(value: "int | float | str | Fraction", what: str = "fps", *,
                positive: bool = True) -> Fraction:
    """``value`` as an exact :class:`~fractions.Fraction` (see the module doc for floats).

    ``what`` names the value in errors; ``positive=False`` also admits 0 (times, not rates).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Fraction)):
        raise ValueError(f"{what} ({value!r}) must be an int, float, Fraction or a string like '30000/1001'")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} ({value}) must be finite")
        result = Fraction(value).limit_denominator(10**6)
    elif isinstance(value, str):
        try:  # "p/q" with decimal p and q ("93.75/4"), or one number
            parts = [Fraction(part.strip()) for part in value.split("/")]
            if len(parts) > 2:
                raise ValueError(value)
            result = parts[0] / parts[1] if len(parts) == 2 else parts[0]
        except (ValueError, ZeroDivisionError) as e:
            raise ValueError(f"{what} ({value!r}) is not a number or a fraction like '30000/1001'") from e
    else:
        result = Fraction(value)
    if result < 0 or (positive and result == 0):
        raise ValueError(f"{what} ({value!r}) must be {'> 0' if positive else '>= 0'}")
    return result


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def frame_columns(sample_rate: int, fps: Fraction, hop: int) -> int:
    """Spectrogram columns per video frame, ``sample_rate / (fps * hop)``.

    Raises a ValueError naming the ratio, the nearest valid hops and the nearest valid
    sample rates when it is not a whole number.
    """
    ratio = Fraction(sample_rate) / (fps * hop)
    if ratio.denominator == 1:
        return int(ratio)
    spf = Fraction(sample_rate) / fps
    if spf.denominator == 1:
        divisors = _divisors(spf.numerator)
        below = [d for d in divisors if d < hop][-1:]
        above = [d for d in divisors if d > hop][:1]
        hop_hint = f"nearest valid hops at {sample_rate} Hz: {below + above}"
    else:
        hop_hint = f"no hop works at {sample_rate} Hz because sample_rate / fps = {spf} is not whole"
    # sr' = m * fps * hop with sr' and m whole: m must be a multiple of q / gcd(q, p * hop)
    p, q = fps.numerator, fps.denominator
    step = p * hop // math.gcd(q, p * hop)
    low = (sample_rate // step) * step
    rates = [r for r in (low, low + step) if r > 0]
    raise ValueError(
        f"sample_rate / (fps * hop) = {sample_rate} / ({fps} * {hop}) = {float(ratio):.6g} "
        f"spectrogram columns per video frame is not a whole number; {hop_hint}; nearest valid "
        f"sample rates for hop {hop}: {rates}"
    )
