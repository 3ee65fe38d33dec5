"""How much memory one request may take: the limit, and the refusal that names the size.

Readers, transforms and recipes estimate what a request will allocate *before* allocating it
and call :func:`check_fits`; a request over the limit is a :class:`MemoryLimitError` (a
``ValueError``) naming what was asked, its estimated size and the limit, instead of a
``MemoryError`` from the allocator minutes later (or the machine swapping).

Choices:

- **The limit**: ``AVBLOCKS_MEMORY_LIMIT`` when set (bytes, or a number with a ``K``/``M``/
  ``G``/``T`` suffix, powers of 1024); otherwise half of the memory the machine has available
  at the time of the check (``MemAvailable`` of ``/proc/meminfo``; total physical memory where
  that file does not exist). Half, because the estimates count the big buffers of a request,
  not every temporary copy the libraries make on the way. A caller may pass its own ``limit``.
- **Estimates are lower bounds** of the peak: they count outputs and the largest
  intermediates, never the allocator's overhead.
"""

import os

__all__ = ["MEMORY_LIMIT_ENV", "MemoryLimitError", "available_bytes", "check_fits", "format_bytes",
           "memory_limit"]

MEMORY_LIMIT_ENV = "AVBLOCKS_MEMORY_LIMIT"
"""The environment variable that sets the memory limit (``8G``, ``512M``)."""
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class MemoryLimitError(ValueError):
    """A request whose estimated size is over the memory limit; refused before allocating."""


def format_bytes(n: float) -> str:
    """``n`` bytes for a message: ``"1.5 GB"``."""
    if n == float("inf"):
        return "more bytes than can be counted"
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def available_bytes() -> int:
    """Memory the machine can give now: ``MemAvailable`` (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _parse(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    unit = text[-1] if text and text[-1] in _UNITS else ""
    try:
        value = float(text[: len(text) - len(unit)])
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{MEMORY_LIMIT_ENV} ({text!r}) must be a positive size like 8G, 512M or 1000000")
    return int(value * _UNITS[unit])


def memory_limit() -> tuple[int, str]:
    """``(bytes, where the number comes from)`` (see the module docstring)."""
    if text := os.environ.get(MEMORY_LIMIT_ENV):
        return _parse(text), f"{MEMORY_LIMIT_ENV}={text}"
    available = available_bytes()
    return available // 2, (f"half of the {format_bytes(available)} this machine has available; "
                            f"set {MEMORY_LIMIT_ENV} to change it")


def check_fits(what: str, nbytes: float, limit: int | None = None) -> None:
    """Refuse (:class:`MemoryLimitError`) when ``what`` would need more than the limit.

    ``what`` says what is asked (``"reading 16 frames of 10000 x 10000"``); the message adds
    the estimate and the limit.
    """
    source = "the limit given"
    if limit is None:
        limit, source = memory_limit()
    if nbytes > limit:
        raise MemoryLimitError(f"{what} would need about {format_bytes(nbytes)}, more than the memory "
                               f"limit of {format_bytes(limit)} ({source})")
