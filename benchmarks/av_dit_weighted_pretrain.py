"""AV-DiT's image-DiT pretraining with the epsilon MSE weighted by ``min(1 / alpha_bar_t, cap)``.

    PYTHONPATH=. python benchmarks/av_dit_weighted_pretrain.py CAP --config recipes/av_dit/configs/pretrain_tiny.yaml \\
        autoencoder=outputs/exp/ae run.output_dir=outputs/exp/pre_w10

The shipped stage (:mod:`recipes.av_dit.pretrain`) trains DiT's plain epsilon MSE, which
weighs an x0 error by the noise level's SNR: at the levels where a small object is placed
(SNR well under 1) it is nearly invisible. This weight counts those levels as a v-loss would
(``1 / alpha_bar = 1 + 1 / SNR``), capped at ``CAP``, normalised by the batch's mean weight.
Everything else is the shipped stage; measure its DiT with ``benchmarks/av_dit_pictures.py``.
"""

import sys

import torch

from recipes.av_dit import pretrain
from recipes.av_dit.trainer import build_ddpm


class WeightedEpsilon:
    """``loss(model, x0, model_kwargs)`` as :meth:`avblocks.diffusion.DDPM.loss`, weighted per example."""

    def __init__(self, ddpm, cap: float):
        if cap < 1:
            raise ValueError(f"cap ({cap}) must be >= 1")
        self.ddpm, self.cap = ddpm, cap

    def loss(self, model, x0: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        d = self.ddpm
        t = d.sample_timesteps(x0.shape[0])
        noise = torch.randn_like(x0)
        pred = model(d.q_sample(x0, t, noise), t, **model_kwargs)
        alpha, _ = d.alpha_sigma(t, x0)
        weight = (1 / alpha.square()).clamp(max=self.cap)
        return (weight * (pred - noise).square()).mean() / weight.mean()


if __name__ == "__main__":
    cap = float(sys.argv[1])
    pretrain.build_ddpm = lambda cfg: WeightedEpsilon(build_ddpm(cfg), cap)
    pretrain.main(sys.argv[2:])
