"""Per-sample / per-frame timesteps: the one place where they meet the data's shape.

Conventions shared by every objective and sampler in :mod:`avblocks.diffusion`:

- Data ``x`` is any tensor ``b ...``. One axis of it is the *frame axis* ``frame_dim``
  (default 2, i.e. ``b c t ...``: the video frames of ``b c t h w``, the frames of
  video-like audio ``b c t f w``, or the six stacked planes of ProAV-DiT's latent).
- A timestep tensor is either ``b`` (one level per sample, shared by all frames) or
  ``b t`` (one level per frame). :func:`broadcast_timesteps` turns either into a tensor
  with the data's rank, ``(b, 1, t or 1, 1, ...)`` for ``frame_dim=2``, so it multiplies
  the data elementwise. Every other module calls it; none broadcasts on its own.
- A *clean mask* is a boolean ``b t`` tensor: ``True`` marks a frame held clean
  (timestep 0, value fixed, excluded from losses). Masks are broadcast by the same helper.
"""

import torch
from torch import Tensor

from avblocks.typing import Bool, Float, Int

# Annotation aliases (module-level so linters read the shape strings as plain strings).
DiffusionData = Float[Tensor, "b *rest"]
"""Data / states / model outputs of any shape with a leading batch axis."""
FlowTimes = Float[Tensor, "b"] | Float[Tensor, "b t"]
"""Flow-matching times in [0, 1]: one per sample or one per frame."""
DDPMSteps = Int[Tensor, "b"] | Int[Tensor, "b t"]
"""Integer DDPM steps: one per sample or one per frame."""
FrameMask = Bool[Tensor, "b frames"]
"""True at the frames held clean."""

__all__ = [
    "DiffusionData",
    "FlowTimes",
    "DDPMSteps",
    "FrameMask",
    "align_timesteps",
    "broadcast_timesteps",
    "frame_timesteps",
    "hold_clean_timesteps",
    "keep_clean_frames",
    "masked_frame_mse",
    "num_frames",
]


def num_frames(x: Tensor, frame_dim: int) -> int:
    """Length of the frame axis ``frame_dim`` of ``x`` (which must not be the batch axis)."""
    dim = frame_dim if frame_dim >= 0 else x.ndim + frame_dim
    if not 1 <= dim < x.ndim:
        raise ValueError(
            f"frame_dim ({frame_dim}) must name a non-batch axis of the data, "
            f"which has shape {tuple(x.shape)}"
        )
    return x.shape[dim]


def broadcast_timesteps(t: Tensor, x: Tensor, frame_dim: int = 2) -> Tensor:
    """View a ``b`` or ``b t`` timestep (or mask) tensor with the rank of ``x``.

    Returns shape ``(b, 1, ..., 1)`` for ``b`` input, and ``(b, 1, .., t, .., 1)`` with ``t``
    at ``frame_dim`` for ``b t`` input. Raises ``ValueError`` naming ``b`` or ``t`` when the
    sizes disagree with the data. The result is a view of ``t`` (moved to ``x``'s device if
    needed), with ``t``'s dtype.
    """
    frames = num_frames(x, frame_dim)
    dim = frame_dim if frame_dim >= 0 else x.ndim + frame_dim
    b = x.shape[0]
    if t.ndim not in (1, 2):
        raise ValueError(
            f"timesteps must have shape `b` ({b},) or `b t` ({b}, {frames}); "
            f"got shape {tuple(t.shape)}"
        )
    if t.shape[0] != b:
        raise ValueError(f"timesteps have b={t.shape[0]} but the data has b={b}")
    shape = [b] + [1] * (x.ndim - 1)
    if t.ndim == 2:
        if t.shape[1] != frames:
            raise ValueError(
                f"per-frame timesteps have t={t.shape[1]} but the data has t={frames} "
                f"frames along dim {frame_dim} (shape {tuple(x.shape)})"
            )
        shape[dim] = frames
    return t.reshape(shape).to(x.device)


def frame_timesteps(t: Tensor, x: Tensor, frame_dim: int = 2) -> Tensor:
    """Return ``t`` as a ``b t`` tensor (a ``b`` tensor is repeated over the frames)."""
    frames = num_frames(x, frame_dim)
    broadcast_timesteps(t, x, frame_dim)  # validates b and t
    return t if t.ndim == 2 else t[:, None].expand(-1, frames)


def align_timesteps(*ts: Tensor, x: Tensor, frame_dim: int = 2) -> tuple[Tensor, ...]:
    """Return the timestep tensors unchanged if they share one form, else all as ``b t``
    (so that ``t_next - t`` never broadcasts a ``b`` against a ``b t`` tensor wrongly)."""
    if all(t.ndim == ts[0].ndim for t in ts):
        for t in ts:
            broadcast_timesteps(t, x, frame_dim)
        return ts
    return tuple(frame_timesteps(t, x, frame_dim) for t in ts)


def hold_clean_timesteps(
    t: Tensor, x: Tensor, clean_mask: Tensor | None, frame_dim: int = 2, clean_value: float = 0
) -> Tensor:
    """Timesteps the model sees: ``t`` unchanged when no mask, else ``b t`` with
    ``clean_value`` (0: clean) at the frames where ``clean_mask`` is True."""
    if clean_mask is None:
        return t
    _check_mask(clean_mask, x, frame_dim)
    t = frame_timesteps(t, x, frame_dim)
    return torch.where(clean_mask.to(t.device), t.new_full((), clean_value), t)


def keep_clean_frames(
    x: Tensor, clean_mask: Tensor | None, fixed: Tensor | None, frame_dim: int = 2
) -> Tensor:
    """Replace the frames marked by ``clean_mask`` by the same frames of ``fixed`` (exactly)."""
    if clean_mask is None:
        return x
    if fixed is None:
        raise ValueError("clean_mask was given without `fixed`, the values of the clean frames")
    if fixed.shape != x.shape:
        raise ValueError(
            f"fixed has shape {tuple(fixed.shape)} but the data has shape {tuple(x.shape)}"
        )
    _check_mask(clean_mask, x, frame_dim)
    return torch.where(broadcast_timesteps(clean_mask.to(x.device), x, frame_dim), fixed, x)


def masked_frame_mse(
    pred: Tensor, target: Tensor, clean_mask: Tensor | None, frame_dim: int = 2,
    weight: Tensor | None = None,
) -> Tensor:
    """MSE over all elements of the frames not held clean (0 if every frame is clean); with
    ``weight`` (broadcastable to ``pred``) each squared error is multiplied by it first."""
    if pred.shape != target.shape:
        raise ValueError(
            f"model output has shape {tuple(pred.shape)} but the target has {tuple(target.shape)}"
        )
    sq = (pred.float() - target.float()).square()
    if weight is not None:
        if weight.ndim > sq.ndim or any(w not in (1, n) for w, n in zip(weight.shape[::-1], sq.shape[::-1])):
            raise ValueError(f"weight has shape {tuple(weight.shape)}, which does not broadcast to the "
                             f"data's {tuple(sq.shape)}")
        sq = sq * weight.float()
    if clean_mask is None:
        return sq.mean()
    dim = frame_dim if frame_dim >= 0 else sq.ndim + frame_dim
    per_frame = sq.mean(dim=[d for d in range(1, sq.ndim) if d != dim])  # b t
    keep = (~clean_mask.to(per_frame.device)).to(per_frame.dtype)
    return (per_frame * keep).sum() / keep.sum().clamp_min(1)


def _check_mask(mask: Tensor, x: Tensor, frame_dim: int) -> None:
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(
            f"clean_mask must be a bool `b t` tensor; got dtype {mask.dtype}, "
            f"shape {tuple(mask.shape)}"
        )
    broadcast_timesteps(mask, x, frame_dim)
