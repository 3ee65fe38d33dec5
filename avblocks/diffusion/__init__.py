"""Diffusion objectives, schedules, samplers, guidance and EMA, with per-frame timesteps.

- :mod:`.timesteps`: the one helper that broadcasts ``b`` / ``b t`` timesteps to the data
  (frame axis ``frame_dim``, default 2: ``b c t ...``), clean-frame masks.
- :mod:`.flow`: rectified flow / flow matching (``x_t = (1 - t) x0 + t noise``, ``v = noise - x0``).
- :mod:`.ddpm`: DDPM linear / cosine schedules, ``q_sample``, eps / v / x0 targets and loss.
- :mod:`.samplers`: Euler and Heun (flow), DDIM and DPM-Solver++(2M) (DDPM).
- :mod:`.guidance`: classifier-free guidance wrapper.
- :mod:`.ema`: exponential moving average of weights.
"""

from avblocks.diffusion.ddpm import (
    DDPM,
    convert_prediction,
    cosine_betas,
    linear_betas,
    prediction_to_x0_eps,
    x0_eps_to_prediction,
)
from avblocks.diffusion.ema import EMA
from avblocks.diffusion.flow import FlowMatching, shift_time
from avblocks.diffusion.guidance import ClassifierFreeGuidance
from avblocks.diffusion.samplers import (
    DDIMSampler,
    DPMSolverPP2MSampler,
    FlowEulerSampler,
    FlowHeunSampler,
    MultistepState,
    ddpm_timesteps,
    flow_timesteps,
)
from avblocks.diffusion.schedules import (
    DiffusionForcingSchedule,
    PyramidSchedule,
    ReadSchedule,
    staggered_grid,
)
from avblocks.diffusion.timesteps import (
    align_timesteps,
    broadcast_timesteps,
    frame_timesteps,
    hold_clean_timesteps,
    keep_clean_frames,
)

__all__ = [
    "DDPM",
    "EMA",
    "ClassifierFreeGuidance",
    "DDIMSampler",
    "DPMSolverPP2MSampler",
    "FlowEulerSampler",
    "FlowHeunSampler",
    "FlowMatching",
    "MultistepState",
    "align_timesteps",
    "broadcast_timesteps",
    "convert_prediction",
    "cosine_betas",
    "ddpm_timesteps",
    "flow_timesteps",
    "frame_timesteps",
    "hold_clean_timesteps",
    "keep_clean_frames",
    "linear_betas",
    "prediction_to_x0_eps",
    "shift_time",
    "x0_eps_to_prediction",
]

__all__ += [
    "ReadSchedule",
    "DiffusionForcingSchedule",
    "PyramidSchedule",
    "staggered_grid",
]
