"""A PNG preview of a sounding clip: a strip of frames above the audio's spectrogram.

Choices:

- Both panels share one time axis spanning the clip ``[0, t / fps)`` (``fps`` given, or
  inferred as ``t * sample_rate / n``, i.e. audio and video cover the same duration): the
  shown frames tile the strip, each drawn over its own time span, so a frame sits exactly
  above the audio it owns.
- At most ``max_frames`` frames are drawn (every ``ceil(t / max_frames)``-th frame, each
  widened to cover the frames it stands for).
- The spectrogram is computed here with ``torch.stft`` (Hann window, ``n_fft`` ~32 ms
  rounded to a power of two, hop ``n_fft / 4``, centred), shown as dB magnitude
  ``20 log10(|X| + 1e-5)`` clipped to the top 80 dB; a multichannel clip is averaged to mono.
- matplotlib is imported only when called, and only its Agg canvas (no pyplot, no global
  backend change). The PNG is written atomically (:func:`avblocks.atomic.atomic_path`:
  a temporary file in the destination folder, renamed over ``path``).
- Returns :class:`PreviewLayout`, the pixel boxes of the two panels in the PNG, so callers
  (and tests) can find the strip and the spectrogram.
"""

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from avblocks.atomic import atomic_path
from avblocks.typing import shapecheck

__all__ = ["save_preview", "save_contact_sheet", "PreviewLayout", "spectrogram_db"]


class PreviewLayout(NamedTuple):
    """Pixel boxes ``(left, top, right, bottom)`` in the saved PNG (origin top-left)."""

    width: int
    height: int
    strip: tuple[int, int, int, int]
    spectrogram: tuple[int, int, int, int]


def spectrogram_db(wav: Tensor, sample_rate: int) -> tuple[Tensor, int]:
    """``(f, frames)`` dB magnitude of a mono ``n`` waveform, and the hop used."""
    n_fft = 2 ** max(6, round(math.log2(0.032 * sample_rate)))
    hop = n_fft // 4
    x = wav.float()
    if x.shape[-1] < n_fft // 2 + 1:  # reflect padding needs n > n_fft / 2
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.shape[-1]))
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft),
        center=True,
        return_complex=True,
    )
    db = 20 * torch.log10(spec.abs() + 1e-5)
    return db.clamp(min=db.max() - 80), hop


@shapecheck
def save_preview(
    path: "str | os.PathLike[str]",
    video: Shaped[Tensor, "c t h w"],
    audio: Float[Tensor, " n"] | Float[Tensor, "ch n"],
    sample_rate: int,
    *,
    fps: int | float | Fraction | None = None,
    max_frames: int = 16,
    frame_height: float = 1.2,
    dpi: int = 100,
    title: str | None = None,
) -> PreviewLayout:
    """Save a PNG with ``video``'s frames (``c t h w``, float in [-1, 1] or uint8, ``c`` 1 or 3)
    above the spectrogram of ``audio`` (``n`` or ``ch n``). ``frame_height`` is the strip's
    height in inches. Returns the panels' pixel boxes."""
    # the Agg canvas directly: no pyplot, so a user's backend is never switched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c, t, h, w = video.shape
    if c not in (1, 3):
        raise ValueError(f"video channels ({c}) must be 1 or 3 (c t h w layout)")
    if max_frames < 1:
        raise ValueError(f"max_frames ({max_frames}) must be >= 1")
    wav = audio.detach().float().cpu()
    wav = wav.mean(0) if wav.ndim == 2 else wav
    n = wav.shape[-1]
    duration = t / float(fps) if fps is not None else n / sample_rate
    if duration <= 0:
        raise ValueError(f"clip duration ({duration}) must be > 0: give fps or non-empty audio")

    v = video.detach().cpu()
    if v.dtype != torch.uint8:
        v = ((v.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    v = v.expand(3, -1, -1, -1).permute(1, 2, 3, 0).numpy()  # t h w 3
    step = math.ceil(t / max_frames)
    shown = list(range(0, t, step))

    db, hop = spectrogram_db(wav, sample_rate)

    # the strip is as tall as one frame drawn at its native aspect
    width_in = 10.0
    strip_in = frame_height
    spec_in = 2.2
    margin_l, margin_r, margin_t, margin_b, gap = 0.8, 0.2, 0.35, 0.5, 0.15
    height_in = margin_t + strip_in + gap + spec_in + margin_b
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax_w = (width_in - margin_l - margin_r) / width_in
    left = margin_l / width_in
    strip_rect = [left, (margin_b + spec_in + gap) / height_in, ax_w, strip_in / height_in]
    spec_rect = [left, margin_b / height_in, ax_w, spec_in / height_in]
    ax_v = fig.add_axes(strip_rect)
    ax_a = fig.add_axes(spec_rect, sharex=ax_v)

    frame_dur = duration / t
    for k in shown:
        span_end = min(t, k + step) * frame_dur
        ax_v.imshow(
            v[k], extent=(k * frame_dur, span_end, 0, 1), aspect="auto", interpolation="nearest"
        )
        if k:
            ax_v.axvline(k * frame_dur, color="white", linewidth=0.8)
    ax_v.set_xlim(0, duration)
    ax_v.set_ylim(0, 1)
    ax_v.set_yticks([])
    ax_v.tick_params(labelbottom=False)
    if title:
        ax_v.set_title(title, fontsize=9)

    # column j of a centred STFT is centred on sample j * hop
    cols = db.shape[1]
    ax_a.imshow(
        db.numpy(),
        origin="lower",
        aspect="auto",
        extent=(-hop / 2 / sample_rate, (cols - 0.5) * hop / sample_rate, 0, sample_rate / 2),
        cmap="magma",
        interpolation="nearest",
    )
    ax_a.set_xlim(0, duration)
    ax_a.set_xlabel("time (s)")
    ax_a.set_ylabel("Hz")

    px_w, px_h = round(width_in * dpi), round(height_in * dpi)

    def box(rect):
        x0, y0, rw, rh = rect
        return (
            round(x0 * px_w),
            round((1 - y0 - rh) * px_h),
            round((x0 + rw) * px_w),
            round((1 - y0) * px_h),
        )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return PreviewLayout(px_w, px_h, box(strip_rect), box(spec_rect))


def save_contact_sheet(
    path: "str | os.PathLike[str]",
    video: Tensor,
    audio: Tensor,
    sample_rate: int,
    titles: list[str],
    *,
    frames: int = 8,
    dpi: int = 100,
) -> Path:
    """One row per clip: ``frames`` evenly spaced frames, then the clip's spectrogram.

    ``video`` is ``b c t h w`` (float in [-1, 1]), ``audio`` ``b n`` or ``b ch n`` (averaged to
    mono). Written atomically; returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if video.ndim != 5 or audio.ndim not in (2, 3) or not len(video) == len(audio) == len(titles):
        raise ValueError(f"expected video b c t h w, audio b n | b ch n and one title per clip; got "
                         f"{tuple(video.shape)}, {tuple(audio.shape)} and {len(titles)} titles")
    n, t = video.shape[0], video.shape[2]
    video = video.detach().float().cpu()
    audio = audio.detach().float().cpu()
    picks = torch.linspace(0, t - 1, min(frames, t)).round().long()
    fig = Figure(figsize=(0.9 * len(picks) + 2.5, 1.1 * n + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n, 2, width_ratios=[len(picks), 3])
    for i in range(n):
        strip = ((video[i][:, picks] + 1) / 2).clamp(0, 1).expand(3, -1, -1, -1)
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(strip.permute(2, 1, 3, 0).flatten(1, 2).numpy(), interpolation="nearest")  # h (t w) c
        ax.set_axis_off()
        ax.set_title(titles[i], fontsize=7, loc="left")
        wav = audio[i].mean(0) if audio.ndim == 3 else audio[i]
        spec, _ = spectrogram_db(wav, sample_rate)
        ax = fig.add_subplot(grid[i, 1])
        ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return path
