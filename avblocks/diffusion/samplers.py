"""Samplers: Euler and Heun for flow matching, DDIM and DPM-Solver++(2M) for DDPM.

Conventions shared by all four (see also :mod:`avblocks.diffusion.flow` / ``.ddpm``):

- ``sample(model, noise, steps, ...)`` starts from ``noise`` (the state at the first grid
  level: ``t = 1`` for flow, step ``T - 1`` for DDPM by default) and returns the clean
  estimate. ``steps`` is the number of solver steps; Heun spends two model evaluations per
  step (so ``2 * steps`` in all), the others one.
- Timestep grid: by default the same level for every frame. ``timesteps=`` takes an explicit
  grid of shape ``(n + 1,)``, ``(n + 1, b)`` or ``(n + 1, b, t)`` (row ``i`` is the level of
  each sample / frame before step ``i``; non-increasing along rows), which is how
  asynchronous per-frame schedules (READ: reference frame clean, the first motion frame one
  level below the rest) are expressed. Each ``step`` takes ``b`` or ``b t`` timesteps.
- Flow grid: ``linspace(1, 0, steps + 1)`` then SD3's shift ``t' = s t / (1 + (s - 1) t)``.
  DDPM grid (integer steps, ending at ``-1`` = clean): ``"trailing"`` (default, Lin et al.
  2024) evaluates at ``round(T - i T / steps) - 1``, i.e. 999, 949, ..., 49 for 20 steps;
  ``"linspace"`` at ``round(linspace(T - 1, 0, steps))``, i.e. 999, ..., 0. A frame's DDPM
  level may reach ``-1`` only in the last row.
- Held-clean frames: ``clean_mask`` (bool ``b t``) with ``fixed`` (data-shaped): those frames
  start at ``fixed``, the model sees timestep ``0`` there (timesteps promoted to ``b t``),
  and after every step they are reset to ``fixed``, so they come out bit-identical.
- The model is called as ``model(x, t, **model_kwargs)``; flow models get float ``t`` in
  ``[0, 1]``, DDPM models integer steps. Wrap it with
  :class:`~avblocks.diffusion.guidance.ClassifierFreeGuidance` for guidance.
- ``progress`` shows a tqdm bar; ``callback(i, x, t)`` is called after step ``i`` with the new
  state and its timesteps. Everything is deterministic given the inputs (and ``generator``
  for DDIM with ``eta > 0``, the only stochastic sampler; it must live on the data's
  device). Sampling runs under ``torch.no_grad()``. Timestep values are validated in eager
  mode (one host sync per check).
- DPM-Solver++(2M) (Lu et al. 2022, data-prediction, multistep): with ``lambda = log(alpha /
  sigma)`` and ``h = lambda_next - lambda``, ``x_next = (sigma_next / sigma) x - alpha_next
  expm1(-h) D`` where ``D = x0 + h / (2 h_prev) (x0 - x0_prev)``. It is first order (= DDIM)
  on the first step, on a step to clean (``sigma_next = 0``, where it returns ``x0``) and on
  any frame whose previous step did not move (``h_prev = 0``); the ratio is computed per
  frame, so asynchronous per-frame grids are handled.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm import tqdm

from avblocks.diffusion.ddpm import DDPM
from avblocks.diffusion.flow import check_unit_interval, shift_time
from avblocks.diffusion.timesteps import (
    DDPMSteps,
    DiffusionData,
    FlowTimes,
    FrameMask,
    align_timesteps,
    broadcast_timesteps,
    hold_clean_timesteps,
    keep_clean_frames,
)
from avblocks.typing import shapecheck

__all__ = [
    "flow_timesteps",
    "ddpm_timesteps",
    "FlowEulerSampler",
    "FlowHeunSampler",
    "DDIMSampler",
    "DPMSolverPP2MSampler",
    "MultistepState",
]

Callback = Callable[[int, Tensor, Tensor], None]


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps ({steps!r}) must be an integer >= 1")


def flow_timesteps(
    steps: int, shift: float = 1.0, device: torch.device | str | None = None
) -> Tensor:
    """Flow grid of ``steps + 1`` levels from 1 to 0: ``linspace`` then SD3's shift."""
    _check_steps(steps)
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)


def ddpm_timesteps(
    num_timesteps: int,
    steps: int,
    spacing: Literal["trailing", "linspace"] = "trailing",
    device: torch.device | str | None = None,
) -> Tensor:
    """Integer DDPM grid: ``steps`` evaluation levels (see module doc) followed by ``-1``."""
    _check_steps(steps)
    if steps > num_timesteps:
        raise ValueError(f"steps ({steps}) must be <= num_timesteps ({num_timesteps})")
    if spacing == "trailing":
        i = torch.arange(steps, dtype=torch.float64)
        levels = torch.round(num_timesteps - i * num_timesteps / steps) - 1
    elif spacing == "linspace":
        levels = torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round()
    else:
        raise ValueError(f"spacing ({spacing!r}) must be 'trailing' or 'linspace'")
    grid = torch.cat([levels.long(), torch.full((1,), -1, dtype=torch.long)])
    return grid.to(device)


@dataclass
class MultistepState:
    """What DPM-Solver++(2M) carries between steps: the last data prediction and its levels."""

    x0: Tensor
    t: Tensor


class _Sampler:
    """The shared sampling loop; subclasses define the grid and one step."""

    frame_dim: int

    def default_timesteps(self, steps: int, device) -> Tensor:
        raise NotImplementedError

    def _check_grid(self, grid: Tensor) -> None:
        raise NotImplementedError

    def _advance(self, model, x, t, t_next, state, model_kwargs, clean_mask, fixed, generator):
        raise NotImplementedError

    def _model_timesteps(self, t: Tensor, x: Tensor, clean_mask: Tensor | None) -> Tensor:
        return hold_clean_timesteps(t, x, clean_mask, self.frame_dim)

    @torch.no_grad()
    @shapecheck
    def sample(
        self,
        model,
        noise: DiffusionData,
        steps: int | None = None,
        *,
        timesteps: Tensor | None = None,
        model_kwargs: dict | None = None,
        clean_mask: FrameMask | None = None,
        fixed: DiffusionData | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        callback: Callback | None = None,
    ) -> DiffusionData:
        """Integrate from ``noise`` to data over ``steps`` steps (or an explicit grid)."""
        if timesteps is None:
            if steps is None:
                raise ValueError("give `steps` (an integer >= 1) or an explicit `timesteps` grid")
            _check_steps(steps)
            grid = self.default_timesteps(steps, noise.device)
        else:
            grid = timesteps.to(noise.device)
            if steps is not None and steps != grid.shape[0] - 1:
                raise ValueError(
                    f"steps ({steps}) disagrees with the timesteps grid ({grid.shape[0] - 1} steps)"
                )
        rows = self._rows(grid, noise)
        self._check_grid(grid)
        x = keep_clean_frames(noise, clean_mask, fixed, self.frame_dim)
        state = None
        for i in tqdm(range(len(rows) - 1), disable=not progress, desc=type(self).__name__):
            x, state = self._advance(
                model, x, rows[i], rows[i + 1], state, model_kwargs, clean_mask, fixed, generator
            )
            if callback is not None:
                callback(i, x, rows[i + 1])
        return x

    def _rows(self, grid: Tensor, x: Tensor) -> list[Tensor]:
        b = x.shape[0]
        if grid.ndim not in (1, 2, 3) or grid.shape[0] < 2:
            raise ValueError(
                "timesteps grid must have shape (n+1,), (n+1, b) or (n+1, b, t) with n >= 1; "
                f"got {tuple(grid.shape)}"
            )
        if (grid[1:] > grid[:-1]).any():
            raise ValueError("timesteps grid must be non-increasing from one row to the next")
        rows = [row.expand(b) for row in grid] if grid.ndim == 1 else list(grid)
        broadcast_timesteps(rows[0], x, self.frame_dim)  # names b / t on mismatch
        return rows


class _FlowSampler(_Sampler):
    def __init__(self, *, shift: float = 1.0, frame_dim: int = 2) -> None:
        if shift <= 0:
            raise ValueError(f"shift ({shift}) must be > 0")
        if frame_dim == 0:
            raise ValueError("frame_dim (0) is the batch axis; pick a data axis (default 2)")
        self.shift = shift
        self.frame_dim = frame_dim

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shift={self.shift}, frame_dim={self.frame_dim})"

    def default_timesteps(self, steps: int, device=None) -> Tensor:
        return flow_timesteps(steps, self.shift, device)

    def _check_grid(self, grid: Tensor) -> None:
        if not grid.is_floating_point():
            raise ValueError(f"flow timesteps must be float in [0, 1]; got dtype {grid.dtype}")
        check_unit_interval(grid, "timesteps")

    def _velocity(self, model, x, t, model_kwargs, clean_mask):
        v = model(x, self._model_timesteps(t, x, clean_mask), **(model_kwargs or {}))
        if v.shape != x.shape:
            raise ValueError(f"model output has shape {tuple(v.shape)}, expected {tuple(x.shape)}")
        return v

    def _dt(self, t: Tensor, t_next: Tensor, x: Tensor) -> Tensor:
        """``t_next - t`` broadcast to ``x``; validates both (shape, range)."""
        t, t_next = align_timesteps(t, t_next, x=x, frame_dim=self.frame_dim)
        check_unit_interval(t)
        check_unit_interval(t_next, "t_next")
        return broadcast_timesteps(t_next - t, x, self.frame_dim).to(x.dtype)

    def _advance(self, model, x, t, t_next, state, model_kwargs, clean_mask, fixed, generator):
        return self.step(
            model, x, t, t_next, model_kwargs=model_kwargs, clean_mask=clean_mask, fixed=fixed
        ), None


class FlowEulerSampler(_FlowSampler):
    """Euler on the flow ODE ``dx/dt = v(x, t)`` from ``t = 1`` to ``0`` (first order)."""

    @shapecheck
    def step(
        self,
        model,
        x: DiffusionData,
        t: FlowTimes,
        t_next: FlowTimes,
        *,
        model_kwargs: dict | None = None,
        clean_mask: FrameMask | None = None,
        fixed: DiffusionData | None = None,
    ) -> DiffusionData:
        """``x + (t_next - t) v(x, t)``; frames in ``clean_mask`` reset to ``fixed``."""
        dt = self._dt(t, t_next, x)
        v = self._velocity(model, x, t, model_kwargs, clean_mask)
        return keep_clean_frames(x + dt * v, clean_mask, fixed, self.frame_dim)


class FlowHeunSampler(_FlowSampler):
    """Heun (explicit trapezoid, second order) on the flow ODE; two evaluations per step,
    including the last step to ``t = 0`` (a flow velocity is finite there)."""

    @shapecheck
    def step(
        self,
        model,
        x: DiffusionData,
        t: FlowTimes,
        t_next: FlowTimes,
        *,
        model_kwargs: dict | None = None,
        clean_mask: FrameMask | None = None,
        fixed: DiffusionData | None = None,
    ) -> DiffusionData:
        """Predict with Euler, correct with the mean of the two velocities."""
        dt = self._dt(t, t_next, x)
        v = self._velocity(model, x, t, model_kwargs, clean_mask)
        x_euler = keep_clean_frames(x + dt * v, clean_mask, fixed, self.frame_dim)
        v_next = self._velocity(model, x_euler, t_next, model_kwargs, clean_mask)
        x_next = x + dt * (v + v_next) / 2
        return keep_clean_frames(x_next, clean_mask, fixed, self.frame_dim)


class _DDPMSampler(_Sampler):
    def __init__(self, diffusion: DDPM, spacing: Literal["trailing", "linspace"]) -> None:
        if spacing not in ("trailing", "linspace"):
            raise ValueError(f"spacing ({spacing!r}) must be 'trailing' or 'linspace'")
        self.diffusion = diffusion
        self.spacing = spacing
        self.frame_dim = diffusion.frame_dim

    def default_timesteps(self, steps: int, device=None) -> Tensor:
        return ddpm_timesteps(self.diffusion.num_timesteps, steps, self.spacing, device)

    def _check_grid(self, grid: Tensor) -> None:
        self.diffusion.check_timesteps(grid[:-1], name="timesteps (all rows but the last)")
        self.diffusion.check_timesteps(grid[-1], allow_clean=True, name="timesteps (last row)")

    def _check_step(self, t: Tensor, t_next: Tensor, x: Tensor) -> None:
        self.diffusion.check_timesteps(t, name="t")
        self.diffusion.check_timesteps(t_next, allow_clean=True, name="t_next")
        align_timesteps(t, t_next, x=x, frame_dim=self.frame_dim)  # names b / t on mismatch

    def _predict(self, model, x, t, model_kwargs, clean_mask) -> tuple[Tensor, Tensor]:
        """Model output at ``x`` converted to ``(x0, eps)``."""
        pred = model(x, self._model_timesteps(t, x, clean_mask), **(model_kwargs or {}))
        if pred.shape != x.shape:
            raise ValueError(
                f"model output has shape {tuple(pred.shape)}, expected {tuple(x.shape)}"
            )
        return self.diffusion.predict_x0_eps(pred, x, t)


class DDIMSampler(_DDPMSampler):
    """DDIM (Song et al. 2021): ``x_next = alpha' x0 + sqrt(sigma'^2 - c^2) eps + c z`` with
    ``c = eta (sigma' / sigma) sqrt(1 - alpha^2 / alpha'^2)``; ``eta = 0`` is deterministic (the
    first-order solver of the probability-flow ODE), ``eta = 1`` is ancestral DDPM-like."""

    def __init__(
        self,
        diffusion: DDPM,
        *,
        eta: float = 0.0,
        spacing: Literal["trailing", "linspace"] = "trailing",
    ) -> None:
        if eta < 0:
            raise ValueError(f"eta ({eta}) must be >= 0")
        super().__init__(diffusion, spacing)
        self.eta = eta

    def __repr__(self) -> str:
        return f"DDIMSampler({self.diffusion!r}, eta={self.eta}, spacing={self.spacing!r})"

    def _advance(self, model, x, t, t_next, state, model_kwargs, clean_mask, fixed, generator):
        x_next = self.step(
            model,
            x,
            t,
            t_next,
            model_kwargs=model_kwargs,
            clean_mask=clean_mask,
            fixed=fixed,
            generator=generator,
        )
        return x_next, None

    @shapecheck
    def step(
        self,
        model,
        x: DiffusionData,
        t: DDPMSteps,
        t_next: DDPMSteps,
        *,
        model_kwargs: dict | None = None,
        clean_mask: FrameMask | None = None,
        fixed: DiffusionData | None = None,
        generator: torch.Generator | None = None,
    ) -> DiffusionData:
        """One DDIM step from levels ``t`` to ``t_next`` (``-1``: clean)."""
        self._check_step(t, t_next, x)
        x0, eps = self._predict(model, x, t, model_kwargs, clean_mask)
        alpha_next, sigma_next = self.diffusion.alpha_sigma(t_next, x)
        if self.eta == 0:
            x_next = alpha_next * x0 + sigma_next * eps
        else:
            alpha, sigma = self.diffusion.alpha_sigma(t, x)
            c = self.eta * sigma_next / sigma * (1 - (alpha / alpha_next) ** 2).clamp_min(0).sqrt()
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_next = alpha_next * x0 + (sigma_next**2 - c**2).clamp_min(0).sqrt() * eps + c * z
        return keep_clean_frames(x_next, clean_mask, fixed, self.frame_dim)


class DPMSolverPP2MSampler(_DDPMSampler):
    """DPM-Solver++(2M) (Lu et al. 2022): multistep second-order solver of the
    probability-flow ODE in data-prediction form; deterministic. See the module doc."""

    def __init__(
        self, diffusion: DDPM, *, spacing: Literal["trailing", "linspace"] = "trailing"
    ) -> None:
        super().__init__(diffusion, spacing)

    def __repr__(self) -> str:
        return f"DPMSolverPP2MSampler({self.diffusion!r}, spacing={self.spacing!r})"

    def _advance(self, model, x, t, t_next, state, model_kwargs, clean_mask, fixed, generator):
        return self.step(
            model,
            x,
            t,
            t_next,
            previous=state,
            model_kwargs=model_kwargs,
            clean_mask=clean_mask,
            fixed=fixed,
        )

    @shapecheck
    def step(
        self,
        model,
        x: DiffusionData,
        t: DDPMSteps,
        t_next: DDPMSteps,
        *,
        previous: MultistepState | None = None,
        model_kwargs: dict | None = None,
        clean_mask: FrameMask | None = None,
        fixed: DiffusionData | None = None,
    ) -> tuple[DiffusionData, MultistepState]:
        """One step from ``t`` to ``t_next``; pass the returned state as ``previous`` next time."""
        self._check_step(t, t_next, x)
        x0, _ = self._predict(model, x, t, model_kwargs, clean_mask)
        t_prev = t if previous is None else previous.t
        t_a, t_next_a, t_prev_a = align_timesteps(t, t_next, t_prev, x=x, frame_dim=self.frame_dim)
        lam = self.diffusion.log_snr(t_a)
        h = self.diffusion.log_snr(t_next_a) - lam  # float64, b or b t; +inf on a step to clean
        d = x0
        if previous is not None:
            h_prev = lam - self.diffusion.log_snr(t_prev_a)
            second = (h_prev > 0) & torch.isfinite(h)
            ratio = torch.where(second, h / (2 * h_prev.where(second, 1.0)), 0.0)
            d = x0 + broadcast_timesteps(ratio, x, self.frame_dim).to(x.dtype) * (x0 - previous.x0)
        alpha_next, sigma_next = self.diffusion.alpha_sigma(t_next, x)
        _, sigma = self.diffusion.alpha_sigma(t, x)
        decay = broadcast_timesteps(torch.expm1(-h), x, self.frame_dim).to(x.dtype)
        x_next = sigma_next / sigma * x - alpha_next * decay * d
        x_next = keep_clean_frames(x_next, clean_mask, fixed, self.frame_dim)
        return x_next, MultistepState(x0=x0, t=t)
