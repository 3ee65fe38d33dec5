"""DDPM (variance-preserving, discrete-time) schedule and objective, with per-frame timesteps.

Conventions (users rely on these; the DDIM / DPM-Solver++ samplers share them):

- Timesteps are integers ``0 .. T-1`` (``T = num_timesteps``, default 1000), shaped ``b`` (one
  per sample) or ``b t`` (one per frame along ``frame_dim``, default 2: ``b c t ...``).
  The extra level ``-1`` means *fully clean* (``alpha = 1, sigma = 0``); it is only ever a
  sampler's target, never passed to the model.
- Forward process: ``x_t = alpha_t x0 + sigma_t eps`` with ``alpha_t = sqrt(alphas_cumprod[t])``,
  ``sigma_t = sqrt(1 - alphas_cumprod[t])``, ``alphas_cumprod = cumprod(1 - betas)``.
- Beta schedules (tables in float64, cast to the data dtype after lookup):
  ``linear``: ``linspace(beta_start, beta_end, T)``, default ``1e-4 .. 0.02`` (DDPM / DiT; no
  rescaling by ``1000 / T`` for other ``T`` -- pass the betas you want);
  ``cosine`` (Nichol & Dhariwal 2021): ``abar(u) = cos^2(((u / T) + s) / (1 + s) * pi / 2)``,
  ``beta_i = min(1 - abar(i + 1) / abar(i), max_beta)`` with ``s = 0.008``, ``max_beta = 0.999``.
- Model: ``model(x_t, t, **model_kwargs)`` with integer ``t``; it predicts ``epsilon``
  (the noise), ``v = alpha_t eps - sigma_t x0`` (Salimans & Ho 2022) or ``x0``, chosen by
  ``prediction``. All conversions between them live in :func:`prediction_to_x0_eps` and
  :func:`x0_eps_to_prediction`.
- Held-clean frames (``clean_mask``, bool ``b t``): ``x_t = x0`` there exactly and the model
  sees timestep ``0`` there (the nearest trained level to clean); they are excluded from the
  loss. With a mask the model's timesteps are promoted to ``b t``; otherwise they keep the
  form they were given.
- Loss: mean squared error on the ``prediction`` target over all elements of every frame not
  held clean. Learned variances (DiT's ``learn_sigma`` / VLB term) are not implemented.
"""

import math
from typing import Literal

import torch
from torch import Tensor

from avblocks.diffusion.timesteps import (
    DDPMSteps,
    DiffusionData,
    FrameMask,
    broadcast_timesteps,
    hold_clean_timesteps,
    keep_clean_frames,
    masked_frame_mse,
)
from avblocks.typing import Float, shapecheck

__all__ = [
    "DDPM",
    "linear_betas",
    "cosine_betas",
    "prediction_to_x0_eps",
    "x0_eps_to_prediction",
    "convert_prediction",
]

Prediction = Literal["epsilon", "v", "x0"]
_PREDICTIONS = ("epsilon", "v", "x0")


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """``linspace(beta_start, beta_end, T)`` in float64."""
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start ({beta_start}) <= beta_end ({beta_end}) < 1")
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's cosine schedule (float64), betas clipped at ``max_beta``."""
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def prediction_to_x0_eps(
    pred: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, kind: str
) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` implied by a model prediction of ``kind`` at ``x_t = alpha x0 + sigma eps``.

    ``alpha``, ``sigma`` broadcast against ``x_t`` (use :meth:`DDPM.alpha_sigma`).
    ``alpha^2 + sigma^2 = 1`` is assumed for ``v``.
    """
    if kind == "epsilon":
        return (x_t - sigma * pred) / alpha, pred
    if kind == "v":
        return alpha * x_t - sigma * pred, sigma * x_t + alpha * pred
    if kind == "x0":
        return pred, (x_t - alpha * pred) / sigma
    raise ValueError(f"prediction kind ({kind!r}) must be one of {_PREDICTIONS}")


def x0_eps_to_prediction(
    x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, kind: str
) -> Tensor:
    """The target a model of ``kind`` should output for ``(x0, eps)``: eps, ``v`` or x0."""
    if kind == "epsilon":
        return eps
    if kind == "v":
        return alpha * eps - sigma * x0
    if kind == "x0":
        return x0
    raise ValueError(f"prediction kind ({kind!r}) must be one of {_PREDICTIONS}")


def convert_prediction(
    pred: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, source: str, target: str
) -> Tensor:
    """Convert a prediction of kind ``source`` into kind ``target`` (via ``x0`` and ``eps``)."""
    x0, eps = prediction_to_x0_eps(pred, x_t, alpha, sigma, source)
    return x0_eps_to_prediction(x0, eps, alpha, sigma, target)


class DDPM:
    """Discrete-time Gaussian diffusion: beta table, ``q_sample``, targets and loss.

    Args:
        schedule: ``"linear"`` or ``"cosine"`` betas.
        num_timesteps: ``T``.
        beta_start, beta_end: the linear schedule's end points.
        cosine_s, max_beta: the cosine schedule's offset and clip.
        prediction: what the model outputs: ``"epsilon"``, ``"v"`` or ``"x0"``.
        frame_dim: the data axis that per-frame timesteps index (default 2, ``b c t ...``).
    """

    def __init__(
        self,
        *,
        schedule: Literal["linear", "cosine"] = "linear",
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        max_beta: float = 0.999,
        prediction: Prediction = "epsilon",
        frame_dim: int = 2,
    ) -> None:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps ({num_timesteps}) must be >= 1")
        if prediction not in _PREDICTIONS:
            raise ValueError(f"prediction ({prediction!r}) must be one of {_PREDICTIONS}")
        if frame_dim == 0:
            raise ValueError("frame_dim (0) is the batch axis; pick a data axis (default 2)")
        if schedule == "linear":
            betas = linear_betas(num_timesteps, beta_start, beta_end)
        elif schedule == "cosine":
            betas = cosine_betas(num_timesteps, cosine_s, max_beta)
        else:
            raise ValueError(f"schedule ({schedule!r}) must be 'linear' or 'cosine'")
        self.schedule = schedule
        self.num_timesteps = num_timesteps
        self.prediction = prediction
        self.frame_dim = frame_dim
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        # index t + 1: level -1 (clean) first, then 0 .. T-1
        abar = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        self._alpha = abar.sqrt()
        self._sigma = (1 - abar).sqrt()

    def __repr__(self) -> str:
        return (
            f"DDPM(schedule={self.schedule!r}, num_timesteps={self.num_timesteps}, "
            f"prediction={self.prediction!r}, frame_dim={self.frame_dim})"
        )

    def check_timesteps(self, t: Tensor, allow_clean: bool = False, name: str = "t") -> None:
        """Raise ``ValueError`` naming the values unless ``t`` is integer in ``[0, T-1]``
        (``[-1, T-1]`` with ``allow_clean``). Range check in eager mode only."""
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of DDPM steps; got dtype {t.dtype}")
        if torch.compiler.is_compiling() or t.numel() == 0:
            return
        lo_allowed = -1 if allow_clean else 0
        lo, hi = int(t.min()), int(t.max())
        if lo < lo_allowed or hi > self.num_timesteps - 1:
            raise ValueError(
                f"{name} must lie in [{lo_allowed}, {self.num_timesteps - 1}]; got min {lo}, max {hi}"
            )

    def alpha_sigma(self, t: Tensor, x: Tensor, allow_clean: bool = True) -> tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t)`` for ``b`` or ``b t`` steps, broadcast to ``x`` (its dtype)."""
        self.check_timesteps(t, allow_clean=allow_clean)
        shape_t = broadcast_timesteps(t, x, self.frame_dim)
        idx = shape_t.long() + 1
        alpha = self._alpha.to(idx.device)[idx].to(x.dtype)
        sigma = self._sigma.to(idx.device)[idx].to(x.dtype)
        return alpha, sigma

    def log_snr(self, t: Tensor) -> Tensor:
        """``lambda_t = log(alpha_t / sigma_t)`` in float64, same shape as ``t`` (+inf at -1)."""
        self.check_timesteps(t, allow_clean=True)
        idx = t.long() + 1
        return self._alpha.to(idx.device)[idx].log() - self._sigma.to(idx.device)[idx].log()

    def sample_timesteps(
        self,
        batch: int,
        frames: int | None = None,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Uniform training steps in ``[0, T-1]``: ``b`` or (``frames`` given) independent ``b t``."""
        shape = (batch,) if frames is None else (batch, frames)
        return torch.randint(0, self.num_timesteps, shape, generator=generator, device=device)

    @shapecheck
    def q_sample(
        self,
        x0: DiffusionData,
        t: DDPMSteps,
        noise: DiffusionData,
    ) -> DiffusionData:
        """``x_t = alpha_t x0 + sigma_t noise``, each frame at its own level for ``b t`` steps."""
        alpha, sigma = self.alpha_sigma(t, x0, allow_clean=True)
        return alpha * x0 + sigma * noise

    @shapecheck
    def target(
        self,
        x0: DiffusionData,
        noise: DiffusionData,
        t: DDPMSteps,
    ) -> DiffusionData:
        """The regression target for ``prediction`` (eps, ``v`` or x0)."""
        alpha, sigma = self.alpha_sigma(t, x0, allow_clean=True)
        return x0_eps_to_prediction(x0, noise, alpha, sigma, self.prediction)

    @shapecheck
    def predict_x0_eps(
        self,
        pred: DiffusionData,
        x_t: DiffusionData,
        t: DDPMSteps,
    ) -> tuple[DiffusionData, DiffusionData]:
        """``(x0, eps)`` implied by a model output of kind ``prediction`` at steps ``t``."""
        alpha, sigma = self.alpha_sigma(t, x_t, allow_clean=False)
        return prediction_to_x0_eps(pred, x_t, alpha, sigma, self.prediction)

    @shapecheck
    def loss(
        self,
        model,
        x0: DiffusionData,
        *,
        t: DDPMSteps | None = None,
        noise: DiffusionData | None = None,
        clean_mask: FrameMask | None = None,
        model_kwargs: dict | None = None,
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, ""]:
        """MSE of ``model(x_t, t, **model_kwargs)`` against the ``prediction`` target.

        ``t`` defaults to uniform steps (one per sample); ``noise`` to standard normal from
        ``generator``. Frames with ``clean_mask`` True are held clean (model sees step 0,
        ``x_t = x0``) and excluded from the loss.
        """
        if t is None:
            t = self.sample_timesteps(x0.shape[0], generator=generator, device=x0.device)
        self.check_timesteps(t)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t_model = hold_clean_timesteps(t, x0, clean_mask, self.frame_dim)
        x_t = keep_clean_frames(self.q_sample(x0, t_model, noise), clean_mask, x0, self.frame_dim)
        pred = model(x_t, t_model, **(model_kwargs or {}))
        target = self.target(x0, noise, t_model)
        return masked_frame_mse(pred, target, clean_mask, self.frame_dim)
