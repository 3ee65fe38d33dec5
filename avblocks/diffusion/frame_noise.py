"""Gaussian noise with a component shared by the frames of a clip (PYoCo's mixed noise prior).

    noise = mixed_frame_noise((b, z, n, h, w), frames=16, share=0.5)

Every element is N(0, 1); the first ``frames`` entries along ``dim`` (the video frames of an
AV-DiT latent; the rest, e.g. spectrogram images, stay independent) are
``sqrt(share) * shared + sqrt(1 - share) * own``, so two different frames correlate with
coefficient ``share`` at every position. Ge et al. (2023, "Preserve Your Own Correlation")
fine-tune an image diffusion model for video with it: an image model run on every frame
from independent noise draws independent frames, and a video model has to undo that; with a
shared part the frames start alike. Train and sample with the same ``share``.

``share = 0`` draws exactly ``torch.randn(shape, generator=...)`` (the same numbers).
"""

import math

import torch
from torch import Tensor

__all__ = ["mixed_frame_noise"]


def mixed_frame_noise(shape: tuple[int, ...], *, frames: int, share: float, dim: int = 2,
                      generator: torch.Generator | None = None, device=None,
                      dtype: torch.dtype | None = None) -> Tensor:
    """Noise of ``shape`` whose first ``frames`` entries along ``dim`` share a ``share`` part (module doc)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"share ({share}) must lie in [0, 1): 1 would make every frame the same noise")
    if not -len(shape) <= dim < len(shape):
        raise ValueError(f"dim ({dim}) is not an axis of shape {tuple(shape)}")
    if not 1 <= frames <= shape[dim]:
        raise ValueError(f"frames ({frames}) must lie in [1, {shape[dim]}] (the size of axis {dim} of {tuple(shape)})")
    noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if share == 0.0:
        return noise
    common = list(shape)
    common[dim] = 1
    shared = torch.randn(common, generator=generator, device=device, dtype=dtype)
    video = noise.narrow(dim, 0, frames)
    video.mul_(math.sqrt(1.0 - share)).add_(shared, alpha=math.sqrt(share))
    return noise
