"""Flow matching (rectified flow) with per-sample or per-frame timesteps.

Conventions (users rely on these; the samplers in :mod:`avblocks.diffusion.samplers` share them):

- Path: ``x_t = (1 - t) * x0 + t * noise`` with ``t`` in ``[0, 1]``; ``t = 0`` is clean data,
  ``t = 1`` is pure standard-normal noise (the SD3 / rectified-flow direction).
- Model: ``model(x_t, t, **model_kwargs)`` predicts the velocity ``v = noise - x0`` (so the
  sampling ODE ``dx/dt = v`` runs from ``t = 1`` down to ``t = 0``). ``t`` is a float tensor
  in ``[0, 1]`` -- no ``* 1000`` rescaling here; a model that wants it does it itself.
- Timesteps are ``b`` (one per sample) or ``b t`` (one per frame along ``frame_dim``,
  default 2: ``b c t ...``); see :mod:`avblocks.diffusion.timesteps`.
- The model receives the timesteps in the form they were given (``b`` or ``b t``); when a
  ``clean_mask`` is given they are promoted to ``b t`` with ``0`` at the clean frames.
- Held-clean frames (``clean_mask``, bool ``b t``): ``x_t`` equals ``x0`` there exactly, the
  model sees ``t = 0`` there, and those frames are excluded from the loss. ProAV-DiT uses
  this for audio-to-video / video-to-audio (one modality's planes clean); READ uses it for
  its clean reference frame.
- Training timesteps: ``uniform`` on ``[0, 1]``, or ``logit_normal`` (``sigmoid`` of a normal
  with ``logit_mean``, ``logit_std``; SD3, Esser et al. 2024), then optionally shifted by
  :func:`shift_time` (SD3's resolution shift ``t' = s t / (1 + (s - 1) t)``, ``s > 1`` moves
  mass towards noise). ``sample_timesteps(b, frames=T)`` draws an independent level per frame.
- Loss: mean squared error between predicted and target velocity, averaged over every
  element of every frame that is not held clean (each such frame weighs the same).
"""

from typing import Literal

import torch
from torch import Tensor

from avblocks.diffusion.timesteps import (
    DiffusionData,
    FlowTimes,
    FrameMask,
    broadcast_timesteps,
    hold_clean_timesteps,
    keep_clean_frames,
    masked_frame_mse,
)
from avblocks.typing import Float, shapecheck

__all__ = ["FlowMatching", "clean_frame_weight", "shift_time", "check_unit_interval"]

TimeDistribution = Literal["uniform", "logit_normal"]


def check_unit_interval(t: Tensor, name: str = "t") -> None:
    """Raise ``ValueError`` naming the offending values if ``t`` leaves ``[0, 1]`` (eager only)."""
    if torch.compiler.is_compiling() or t.numel() == 0:
        return
    lo, hi = float(t.min()), float(t.max())
    if lo < 0 or hi > 1 or t.isnan().any():
        raise ValueError(f"{name} must lie in [0, 1] (0 clean, 1 noise); got min {lo}, max {hi}")


def shift_time(t: Tensor, shift: float) -> Tensor:
    """SD3's time shift ``t' = s t / (1 + (s - 1) t)``: identity at ``s = 1``, keeps 0 and 1 fixed."""
    if shift <= 0:
        raise ValueError(f"shift ({shift}) must be > 0")
    if shift == 1:
        return t
    return shift * t / (1 + (shift - 1) * t)


def clean_frame_weight(t: Tensor, ndim: int, *, min_time: float = 0.05) -> Tensor:
    """``max(t, min_time)^2`` per frame, shaped ``b 1 frames 1 ...`` (``ndim`` axes) to weigh the
    velocity error of ``b c frames ...`` data (:meth:`FlowMatching.loss`'s ``weight``).

    On the path ``x_t = (1 - t) x0 + t noise`` the clean estimate is ``x_t - t v``, so ``t`` times
    the velocity error is the error of the clean data: with this weight the loss counts every
    noise level by how wrong its clean estimate is, and the noisy levels, where a frame's layout
    (and its event timing) is decided, weigh as much as the last details instead of up to
    ``1 / min_time^2`` times less. ``min_time`` keeps the weight of the cleanest levels above 0.
    """
    if t.ndim != 2 or ndim < 3:
        raise ValueError(f"t must be b frames and the data have >= 3 axes; got t {tuple(t.shape)}, ndim {ndim}")
    weight = t.clamp_min(min_time).square()[:, None]
    return weight.reshape(*weight.shape, *([1] * (ndim - weight.ndim)))


class FlowMatching:
    """Rectified-flow objective: path, velocity target, training timesteps and loss.

    Args:
        time_distribution: ``"uniform"`` or ``"logit_normal"`` for training timesteps.
        logit_mean, logit_std: parameters of the logit-normal distribution.
        shift: SD3 time shift applied to sampled training timesteps (1: none).
        frame_dim: the data axis that per-frame timesteps index (default 2, ``b c t ...``).
    """

    def __init__(
        self,
        *,
        time_distribution: TimeDistribution = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float = 1.0,
        frame_dim: int = 2,
    ) -> None:
        if time_distribution not in ("uniform", "logit_normal"):
            raise ValueError(
                f"time_distribution ({time_distribution!r}) must be 'uniform' or 'logit_normal'"
            )
        if logit_std <= 0:
            raise ValueError(f"logit_std ({logit_std}) must be > 0")
        if shift <= 0:
            raise ValueError(f"shift ({shift}) must be > 0")
        if frame_dim == 0:
            raise ValueError("frame_dim (0) is the batch axis; pick a data axis (default 2)")
        self.time_distribution = time_distribution
        self.logit_mean = logit_mean
        self.logit_std = logit_std
        self.shift = shift
        self.frame_dim = frame_dim

    def __repr__(self) -> str:
        return (
            f"FlowMatching(time_distribution={self.time_distribution!r}, "
            f"logit_mean={self.logit_mean}, logit_std={self.logit_std}, shift={self.shift}, "
            f"frame_dim={self.frame_dim})"
        )

    def sample_timesteps(
        self,
        batch: int,
        frames: int | None = None,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Training timesteps: ``b`` (``frames=None``) or ``b t`` with independent levels."""
        shape = (batch,) if frames is None else (batch, frames)
        if self.time_distribution == "uniform":
            t = torch.rand(shape, generator=generator, device=device)
        else:
            z = torch.randn(shape, generator=generator, device=device)
            t = torch.sigmoid(self.logit_mean + self.logit_std * z)
        return shift_time(t, self.shift)

    @shapecheck
    def interpolate(
        self,
        x0: DiffusionData,
        noise: DiffusionData,
        t: FlowTimes,
    ) -> DiffusionData:
        """``x_t = (1 - t) x0 + t noise`` with ``t`` broadcast along the frame axis."""
        check_unit_interval(t)
        tb = broadcast_timesteps(t, x0, self.frame_dim).to(x0.dtype)
        return (1 - tb) * x0 + tb * noise

    @shapecheck
    def velocity(self, x0: DiffusionData, noise: DiffusionData) -> DiffusionData:
        """The regression target ``v = noise - x0``."""
        return noise - x0

    @shapecheck
    def predict_x0(
        self,
        v: DiffusionData,
        x_t: DiffusionData,
        t: FlowTimes,
    ) -> DiffusionData:
        """Clean estimate from a velocity: ``x0 = x_t - t v``."""
        return x_t - broadcast_timesteps(t, x_t, self.frame_dim).to(x_t.dtype) * v

    @shapecheck
    def loss(
        self,
        model,
        x0: DiffusionData,
        *,
        t: FlowTimes | None = None,
        noise: DiffusionData | None = None,
        clean_mask: FrameMask | None = None,
        model_kwargs: dict | None = None,
        generator: torch.Generator | None = None,
        weight: Tensor | None = None,
    ) -> Float[Tensor, ""]:
        """Flow-matching loss of ``model(x_t, t, **model_kwargs)`` on a batch of data ``x0``.

        ``t`` defaults to :meth:`sample_timesteps` (one per sample); pass a ``b t`` tensor for
        per-frame levels. ``noise`` defaults to standard normal from ``generator`` (which must
        live on ``x0``'s device).
        Frames with ``clean_mask`` True are held clean (``t = 0``, ``x_t = x0``) and excluded.
        ``weight`` (broadcastable to ``x0``) multiplies each squared error (loss weighting).
        """
        b = x0.shape[0]
        if t is None:
            t = self.sample_timesteps(b, generator=generator, device=x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t_model = hold_clean_timesteps(t, x0, clean_mask, self.frame_dim)
        x_t = keep_clean_frames(
            self.interpolate(x0, noise, t_model), clean_mask, x0, self.frame_dim
        )
        pred = model(x_t, t_model, **(model_kwargs or {}))
        return masked_frame_mse(pred, self.velocity(x0, noise), clean_mask, self.frame_dim, weight=weight)
