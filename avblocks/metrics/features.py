"""Feature extractors for the distribution distances: clips in, one vector per clip out.

FVD/KVD and FAD are :func:`~avblocks.metrics.distribution.frechet_distance` and
:func:`~avblocks.metrics.distribution.kernel_distance` computed on the features of a fixed
network (I3D for video, VGGish for audio). The formulas do not depend on the network; the
numbers do, so numbers are only comparable with the same extractor. This module gives:

- :class:`FeatureExtractor`: the interface. ``video_features(video b 3 t h w in [-1, 1]) -> b d``
  and ``audio_features(waveform b n, sample_rate) -> b d``; an extractor for one modality
  lists it in ``modalities`` and the other method raises :class:`NotImplementedError` naming
  what the extractor does support.
- :func:`check_video`, :func:`check_waveform`: the input checks every extractor runs first.
- :func:`distribution_distances`, :func:`video_distances`, :func:`audio_distances`: both
  distances at once, from features or from clips.

The extractors themselves: :class:`~avblocks.metrics.synthetic_features.SyntheticFeatureNet`
(a small network trained on the synthetic set, for the demo; its numbers are *not* FVD/FAD)
and :class:`~avblocks.metrics.torchscript_features.TorchScriptFeatures` (a real I3D/VGGish,
or any, export loaded from a local path).

Input conventions shared by every extractor:

- video is ``b 3 t h w`` float in [-1, 1]. Values are checked against [-1.5, 1.5] (a tensor in
  [0, 255] fails with a message saying how to map it) and then clamped to [-1, 1], which is
  what writing the clip to a video file would do to slightly out-of-range generated pixels;
- audio is a mono waveform ``b n`` float with its ``sample_rate`` given explicitly; it is
  resampled (``torchaudio.functional.resample``, windowed sinc, torchaudio's defaults) to the
  rate the extractor expects.
"""

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from avblocks.metrics.distribution import frechet_distance, kernel_distance
from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "FeatureExtractor",
    "audio_distances",
    "check_video",
    "check_waveform",
    "distribution_distances",
    "extract_audio_features",
    "extract_video_features",
    "video_distances",
]

_RANGE_SLACK = 0.5  # generated pixels may overshoot [-1, 1] a little; [0, 255] may not


def check_video(video: Tensor) -> Tensor:
    """Validate a ``b 3 t h w`` video in [-1, 1] and return it as float, clamped to [-1, 1].

    Raises :class:`ValueError` naming the shape, dtype or value range that is wrong.
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(
            f"video must be b 3 t h w (RGB channels second), got shape {tuple(video.shape)}"
        )
    if not video.is_floating_point():
        raise ValueError(
            f"video must be float in [-1, 1], got dtype {video.dtype}; map uint8 frames with "
            "video.float() / 127.5 - 1"
        )
    if video.numel() > 0:
        low, high = float(video.min()), float(video.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("video contains NaN or infinite values")
        if low < -1 - _RANGE_SLACK or high > 1 + _RANGE_SLACK:
            raise ValueError(
                f"video values must be in [-1, 1], got [{low:.3g}, {high:.3g}]; map [0, 255] "
                "with x / 127.5 - 1 and [0, 1] with x * 2 - 1"
            )
    return video.float().clamp(-1.0, 1.0)


def check_waveform(waveform: Tensor, sample_rate: int) -> Tensor:
    """Validate a mono ``b n`` float waveform and a positive integer ``sample_rate``."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate ({sample_rate!r}) must be a positive int (Hz)")
    if waveform.ndim != 2:
        raise ValueError(
            f"waveform must be mono b n, got shape {tuple(waveform.shape)}; mix channels "
            "down first (e.g. waveform.mean(dim=1) for b ch n)"
        )
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be float, got dtype {waveform.dtype}")
    if waveform.numel() > 0 and not bool(torch.isfinite(waveform).all()):
        raise ValueError("waveform contains NaN or infinite values")
    return waveform.float()


def _resize_frames(video: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize every frame to ``size`` (bilinear, antialiased when shrinking)."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    b = video.shape[0]
    frames = rearrange(video, "b c t h w -> (b t) c h w")
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    return rearrange(frames, "(b t) c h w -> b c t h w", b=b)


class FeatureExtractor(nn.Module):
    """Interface of a feature extractor for Fréchet / kernel distances.

    Subclasses set ``modalities`` (``("video",)``, ``("audio",)`` or both) and override the
    matching methods. Both methods return one feature vector per clip, ``b d``. The helpers
    of this module call them under ``torch.no_grad()``; the methods themselves keep gradients
    when enabled (so an extractor can also serve as a feature-matching loss).
    """

    modalities: tuple[str, ...] = ()

    def video_features(self, video: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b d"]:
        """``b 3 t h w`` video in [-1, 1] -> ``b d`` features."""
        raise NotImplementedError(
            f"{type(self).__name__} has no video features (modalities: {self.modalities})"
        )

    def audio_features(
        self, waveform: Float[Tensor, "b n"], sample_rate: int
    ) -> Float[Tensor, "b d"]:
        """Mono waveform ``b n`` at ``sample_rate`` Hz -> ``b d`` features."""
        raise NotImplementedError(
            f"{type(self).__name__} has no audio features (modalities: {self.modalities})"
        )

    @property
    def device(self) -> torch.device:
        """Where the extractor's weights live (CPU when it has none)."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------


@shapecheck
def distribution_distances(
    real: Float[Tensor, "n d"],
    fake: Float[Tensor, "m d"],
    *,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """``{"frechet": ..., "kernel": ...}`` between two feature sets (raw values, no scaling).

    ``frechet`` is :func:`frechet_distance`; ``kernel`` is the unbiased cubic-polynomial
    MMD^2 of :func:`kernel_distance` over ``num_subsets`` subsets of ``subset_size`` rows.
    Papers often report KVD/KID multiplied by 1000 or 100: that scaling is left to the caller.
    """
    return {
        "frechet": frechet_distance(real, fake),
        "kernel": kernel_distance(
            real, fake, subset_size=subset_size, num_subsets=num_subsets, seed=seed
        ),
    }


def _batches(data: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size ({batch_size}) must be >= 1")
    if isinstance(data, Tensor):
        return data.split(batch_size)
    return data


def extract_video_features(
    extractor: FeatureExtractor, videos: Tensor | Iterable[Tensor], *, batch_size: int = 32
) -> Float[Tensor, "n d"]:
    """Features of ``videos`` (one ``n 3 t h w`` tensor, cut into ``batch_size`` chunks, or an
    iterable of such batches), computed without gradients; returned on the CPU in float32."""
    device = extractor.device
    with torch.no_grad():
        out = [extractor.video_features(v.to(device)).float().cpu() for v in _batches(videos, batch_size)]
    if not out:
        raise ValueError("no videos given")
    return torch.cat(out)


def extract_audio_features(
    extractor: FeatureExtractor,
    waveforms: Tensor | Iterable[Tensor],
    sample_rate: int,
    *,
    batch_size: int = 32,
) -> Float[Tensor, "n d"]:
    """Features of mono ``waveforms`` (``n samples`` tensor or an iterable of ``b n`` batches)
    at ``sample_rate`` Hz, computed without gradients; returned on the CPU in float32."""
    device = extractor.device
    with torch.no_grad():
        out = [
            extractor.audio_features(w.to(device), sample_rate).float().cpu()
            for w in _batches(waveforms, batch_size)
        ]
    if not out:
        raise ValueError("no waveforms given")
    return torch.cat(out)


def video_distances(
    extractor: FeatureExtractor,
    real: Tensor | Iterable[Tensor],
    fake: Tensor | Iterable[Tensor],
    *,
    batch_size: int = 32,
    **distance_kwargs: Any,
) -> dict[str, float]:
    """FVD/KVD-style distances: :func:`distribution_distances` of the two sets' video features."""
    return distribution_distances(
        extract_video_features(extractor, real, batch_size=batch_size),
        extract_video_features(extractor, fake, batch_size=batch_size),
        **distance_kwargs,
    )


def audio_distances(
    extractor: FeatureExtractor,
    real: Tensor | Iterable[Tensor],
    fake: Tensor | Iterable[Tensor],
    sample_rate: int,
    *,
    batch_size: int = 32,
    **distance_kwargs: Any,
) -> dict[str, float]:
    """FAD-style distances (Fréchet and kernel) of the two sets' audio features."""
    return distribution_distances(
        extract_audio_features(extractor, real, sample_rate, batch_size=batch_size),
        extract_audio_features(extractor, fake, sample_rate, batch_size=batch_size),
        **distance_kwargs,
    )
