"""Distances between feature distributions: the formulas behind FVD/FAD and KVD/KID.

Both take two sets of features ``n d`` (real and generated) from a pluggable extractor
(I3D for FVD, VGGish for FAD, or any network that maps clips to vectors): the metric is only
as meaningful as the extractor, and numbers are comparable only with the same extractor.

- :func:`frechet_distance`: Fréchet distance between Gaussians fitted to the two sets,
  ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``. The trace of the matrix square root
  is computed as ``sum(sqrt(eig(S_a^{1/2} S_b S_a^{1/2})))``: that matrix is symmetric
  positive semi-definite, so its eigenvalues are real and the result needs no complex
  arithmetic (``scipy.linalg.sqrtm`` of the non-symmetric ``S_a S_b`` gives the same trace).
  Covariances use the unbiased ``n - 1`` normalisation; computed in float64.
- :func:`kernel_distance`: the unbiased estimate of the squared MMD with the cubic polynomial
  kernel ``k(x, y) = (x . y / d + 1)^3`` (KID, Binkowski et al. 2018; KVD uses the same on
  video features), averaged over ``num_subsets`` random subsets of ``subset_size`` rows.
"""

import torch

from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["frechet_distance", "kernel_distance", "gaussian_stats"]


def gaussian_stats(features: Float[Tensor, "n d"]) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of ``features`` in float64."""
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    x = features.double()
    mean = x.mean(dim=0)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


@shapecheck
def frechet_distance(real: Float[Tensor, "n d"], fake: Float[Tensor, "m d"]) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the module says how)."""
    mu_a, cov_a = gaussian_stats(real)
    mu_b, cov_b = gaussian_stats(fake)
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return float(distance.clamp(min=0))


def _polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    return (x @ y.T / x.shape[1] + 1) ** 3


@shapecheck
def kernel_distance(
    real: Float[Tensor, "n d"],
    fake: Float[Tensor, "m d"],
    *,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> float:
    """Unbiased polynomial-kernel MMD^2, averaged over random subsets (KID/KVD)."""
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(f"subset size must be at least 2, got {size} (from {real.shape[0]} "
                         f"real and {fake.shape[0]} generated feature vectors)")
    if num_subsets < 1:
        raise ValueError(f"num_subsets ({num_subsets}) must be at least 1")
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = real.double(), fake.double()
    total = 0.0
    for _ in range(num_subsets):
        x = x_all[torch.randperm(x_all.shape[0], generator=generator)[:size]]
        y = y_all[torch.randperm(y_all.shape[0], generator=generator)[:size]]
        k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        off_diagonal = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (size * (size - 1))
        total += float(off_diagonal - 2 * k_xy.mean())
    return total / num_subsets
