"""Per-frame noise schedules: which flow time each frame has, in training and in sampling.

A schedule does not step anything itself: it *produces* the per-frame levels that the
existing objective and samplers consume,

- training: ``training_timesteps(batch)`` -> ``(t b t, clean_mask b t)`` for
  :meth:`avblocks.diffusion.FlowMatching.loss` (``t=..., clean_mask=...``);
- sampling: ``grid(steps, batch)`` -> ``(timesteps (n+1) b t, clean_mask b t)`` for
  ``FlowEulerSampler().sample(model, x, timesteps=grid, clean_mask=..., fixed=...)``, whose
  rows are the levels of every frame before each step.

Flow convention (:mod:`avblocks.diffusion.flow`): ``t = 1`` is pure noise, ``t = 0`` clean.

Every grid here is built from one *base grid* ``g_0 = 1 > g_1 > ... > g_n = 0`` (the
sampler's default, :func:`~avblocks.diffusion.flow_timesteps`: ``linspace`` then SD3's shift)
and an integer *offset* per frame: frame ``k`` at row ``i`` has level
``g[clamp(i + offset_k, 0, n)]`` (:func:`staggered_grid`). An offset of ``+1`` puts a frame
one level *ahead* (less noisy); ``-d`` makes it wait ``d`` rows at pure noise. The grid has
``n + 1 + max(0, -min(offset))`` rows, so the most delayed frame still gets all ``n`` steps.

Schedules (choices stated; READ publishes its rule, not its code):

- :class:`ReadSchedule` (READ's asynchronous noise schedule): frame 0 is the *reference*
  frame, held clean (level 0 in every row, ``clean_mask`` True, so the sampler keeps it
  bit-identical); frames ``1 .. motion_frames`` are *motion* frames one level below the
  rest (offset ``+lag``): ``t1 = g[i + lag] < t2 = g[i]``; all other frames have offset 0.
  In long generation the motion frame is the frame carried over from the previous clip,
  re-noised to ``g[lag]`` before the first step. Training draws ``u`` from the base
  distribution (uniform or logit-normal on ``[0, 1]``) and sets ``t2 = shift(u)`` and
  ``t1 = shift(max(u - lag / steps, 0))``: with ``shift_time`` applied to a linear grid of
  ``steps`` steps this is exactly the gap the sampling grid has, so training sees the
  level pairs that sampling visits (and everything in between).
- :class:`DiffusionForcingSchedule` (Chen et al. 2024): in training every frame draws its own
  level independently (no clean frames); the model then handles any per-frame mixture,
  including the staggered grids below. Its sampling grid is the pyramid one.
- :class:`PyramidSchedule` (frame-staggered, diffusion forcing's "pyramid"): frame ``k``
  waits ``stagger * k`` rows, so earlier frames are always less noisy than later ones and a
  causal model can denoise a stream. Training: levels increase along the frames as the
  staggered grid does: a random row ``r`` of the sampling grid, drawn uniformly (so every
  row of the pyramid is seen).
"""

import torch
from torch import Tensor

from avblocks.config import check_int
from avblocks.diffusion.flow import shift_time
from avblocks.diffusion.samplers import flow_timesteps

__all__ = [
    "staggered_grid",
    "ReadSchedule",
    "DiffusionForcingSchedule",
    "PyramidSchedule",
]


def staggered_grid(base: Tensor, offsets: list[int] | tuple[int, ...], batch: int) -> Tensor:
    """Per-frame grid ``(rows, batch, frames)`` from a base grid ``(n + 1,)`` and per-frame offsets.

    ``grid[i, :, k] = base[clamp(i + offsets[k], 0, n)]`` for ``i < n + 1 + max(0, -min(offsets))``
    (see the module docstring). ``base`` must be non-increasing; every row of the result is
    then non-increasing along the rows, as the samplers require.
    """
    if base.ndim != 1 or base.shape[0] < 2:
        raise ValueError(f"base grid must have shape (n+1,) with n >= 1; got {tuple(base.shape)}")
    if (base[1:] > base[:-1]).any():
        raise ValueError("base grid must be non-increasing")
    if len(offsets) == 0:
        raise ValueError("offsets must name one integer per frame; got none")
    check_int("batch", batch)
    n = base.shape[0] - 1
    rows = n + 1 + max(0, -min(offsets))
    i = torch.arange(rows)[:, None]
    index = (i + torch.as_tensor(offsets, dtype=torch.long)[None, :]).clamp(0, n)  # rows t
    return base[index.to(base.device)][:, None, :].expand(rows, batch, len(offsets)).contiguous()


class _FlowTimes:
    """Base-distribution draws shared by the training side of every schedule."""

    def __init__(self, *, time_distribution: str, logit_mean: float, logit_std: float,
                 shift: float) -> None:
        if time_distribution not in ("uniform", "logit_normal"):
            raise ValueError(
                f"time_distribution ({time_distribution!r}) must be 'uniform' or 'logit_normal'"
            )
        if not logit_std > 0:
            raise ValueError(f"logit_std ({logit_std}) must be > 0")
        if not shift > 0:
            raise ValueError(f"shift ({shift}) must be > 0")
        self.time_distribution = time_distribution
        self.logit_mean = logit_mean
        self.logit_std = logit_std
        self.shift = shift

    def _unit(self, shape: tuple[int, ...], generator, device) -> Tensor:
        """Unshifted draws ``u`` in ``[0, 1]``."""
        if self.time_distribution == "uniform":
            return torch.rand(shape, generator=generator, device=device)
        z = torch.randn(shape, generator=generator, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * z)

    def base_grid(self, steps: int, device=None) -> Tensor:
        """The base grid ``g``: ``linspace(1, 0, steps + 1)`` then the schedule's shift."""
        check_int("steps", steps)
        return flow_timesteps(steps, self.shift, device)


class ReadSchedule(_FlowTimes):
    """READ's asynchronous schedule: clean reference, motion frame(s) one level below the rest.

    Frames are ordered ``[reference, motion_1 .. motion_m, rest ...]`` (see the module doc).

    Args:
        frames: frames per clip ``t`` (reference included); at least ``2 + motion_frames``
            would leave a "rest", at least ``1 + motion_frames`` is required.
        motion_frames: how many frames after the reference are one level ahead (READ: 1, the
            frame carried over from the previous clip).
        lag: how many grid levels ahead the motion frames are (``>= 1``).
        steps: the sampling step count that defines "one level" for *training*
            (``t1 = shift(max(u - lag / steps, 0))``); :meth:`grid` takes its own count.
        time_distribution, logit_mean, logit_std: base distribution of ``u`` in training.
        shift: SD3 time shift of the base grid and of the training draws.
    """

    def __init__(
        self,
        *,
        frames: int,
        motion_frames: int = 1,
        lag: int = 1,
        steps: int = 20,
        time_distribution: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float = 1.0,
    ) -> None:
        super().__init__(time_distribution=time_distribution, logit_mean=logit_mean,
                         logit_std=logit_std, shift=shift)
        check_int("frames", frames, 2)
        check_int("motion_frames", motion_frames)
        check_int("lag", lag)
        check_int("steps", steps)
        if motion_frames > frames - 1:
            raise ValueError(
                f"motion_frames ({motion_frames}) must be <= frames - 1 ({frames - 1}): "
                "frame 0 is the reference"
            )
        if lag > steps:
            raise ValueError(f"lag ({lag}) must be <= steps ({steps})")
        self.frames = frames
        self.motion_frames = motion_frames
        self.lag = lag
        self.steps = steps

    def __repr__(self) -> str:
        return (f"ReadSchedule(frames={self.frames}, motion_frames={self.motion_frames}, "
                f"lag={self.lag}, steps={self.steps}, shift={self.shift})")

    @property
    def offsets(self) -> list[int]:
        """Grid offsets per frame: motion ``lag``, rest 0 (the reference column is then set to 0)."""
        return [0] + [self.lag] * self.motion_frames + [0] * (self.frames - 1 - self.motion_frames)

    def clean_mask(self, batch: int, device=None) -> Tensor:
        """``b t`` bool, True at the reference frame only."""
        mask = torch.zeros(batch, self.frames, dtype=torch.bool, device=device)
        mask[:, 0] = True
        return mask

    def training_timesteps(
        self, batch: int, *, generator: torch.Generator | None = None, device=None
    ) -> tuple[Tensor, Tensor]:
        """``(t, clean_mask)``, both ``b t``: reference 0, motion ``t1``, rest ``t2`` (module doc)."""
        check_int("batch", batch)
        u = self._unit((batch,), generator, device)
        t2 = shift_time(u, self.shift)
        t1 = shift_time((u - self.lag / self.steps).clamp_min(0.0), self.shift)
        t = t2[:, None].repeat(1, self.frames)
        t[:, 1 : 1 + self.motion_frames] = t1[:, None]
        t[:, 0] = 0.0
        return t, self.clean_mask(batch, device)

    def grid(self, steps: int, batch: int, device=None) -> tuple[Tensor, Tensor]:
        """``(timesteps (steps+1) b t, clean_mask b t)``: reference 0, motion ``g[i + lag]``,
        rest ``g[i]`` at row ``i`` (``g`` the shifted base grid of ``steps`` steps)."""
        if self.lag > steps:
            raise ValueError(f"lag ({self.lag}) must be <= the sampling steps ({steps})")
        base = self.base_grid(steps, device)
        grid = staggered_grid(base, self.offsets, batch)
        grid[:, :, 0] = 0.0
        return grid, self.clean_mask(batch, device)


class DiffusionForcingSchedule(_FlowTimes):
    """Independent per-frame levels in training; the pyramid grid for sampling.

    Args:
        frames: frames per clip ``t``.
        stagger: rows each frame waits after the previous one in :meth:`grid` (pyramid).
        time_distribution, logit_mean, logit_std, shift: per-frame training draws
            (``t = shift(u)``, ``u`` i.i.d. per frame) and the base grid's shift.
    """

    def __init__(
        self,
        *,
        frames: int,
        stagger: int = 1,
        time_distribution: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float = 1.0,
    ) -> None:
        super().__init__(time_distribution=time_distribution, logit_mean=logit_mean,
                         logit_std=logit_std, shift=shift)
        self.frames = check_int("frames", frames)
        self.stagger = check_int("stagger", stagger, 0)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(frames={self.frames}, stagger={self.stagger}, "
                f"shift={self.shift})")

    @property
    def offsets(self) -> list[int]:
        """Grid offsets per frame: ``-stagger * k`` (frame ``k`` waits ``stagger * k`` rows)."""
        return [-self.stagger * k for k in range(self.frames)]

    def training_timesteps(
        self, batch: int, *, generator: torch.Generator | None = None, device=None
    ) -> tuple[Tensor, None]:
        """``(t b t, None)``: an independent level per frame, no frame held clean."""
        check_int("batch", batch)
        return shift_time(self._unit((batch, self.frames), generator, device), self.shift), None

    def grid(self, steps: int, batch: int, device=None) -> tuple[Tensor, None]:
        """``(timesteps, None)``: frame ``k`` at row ``i`` has ``g[clamp(i - stagger k, 0, steps)]``;
        ``steps + 1 + stagger (frames - 1)`` rows."""
        return staggered_grid(self.base_grid(steps, device), self.offsets, batch), None

    def num_rows(self, steps: int) -> int:
        """Rows of :meth:`grid` (model evaluations + 1 for Euler)."""
        return steps + 1 + self.stagger * (self.frames - 1)


class PyramidSchedule(DiffusionForcingSchedule):
    """Frame-staggered (pyramid) schedule in training *and* sampling.

    Same grid as :class:`DiffusionForcingSchedule`; training draws a row of that grid
    uniformly: for ``train_steps`` steps, row ``r`` uniform in ``[0, num_rows - 1)`` (the last
    row is all-clean and is never trained on), with ``u = 1 - (r - stagger k) / train_steps``
    clamped to ``[0, 1]`` per frame, then shifted: levels never decrease along the frames.

    Args:
        frames, stagger, shift: as :class:`DiffusionForcingSchedule`.
        train_steps: the grid resolution training rows are drawn from.
    """

    def __init__(self, *, frames: int, stagger: int = 1, train_steps: int = 100,
                 shift: float = 1.0) -> None:
        super().__init__(frames=frames, stagger=stagger, shift=shift)
        self.train_steps = check_int("train_steps", train_steps)

    def training_timesteps(
        self, batch: int, *, generator: torch.Generator | None = None, device=None
    ) -> tuple[Tensor, None]:
        """``(t b t, None)``: one random row of the pyramid grid per sample."""
        check_int("batch", batch)
        n = self.train_steps
        rows = self.num_rows(n)
        r = torch.randint(0, rows - 1, (batch, 1), generator=generator, device=device)
        k = torch.arange(self.frames, device=device)[None, :]
        u = (1 - (r - self.stagger * k).float() / n).clamp(0.0, 1.0)
        return shift_time(u, self.shift), None
