"""Fréchet and kernel distances against a direct numpy/scipy computation of the same formulas."""

import numpy as np
import pytest
import scipy.linalg
import torch

from avblocks.metrics.distribution import frechet_distance, kernel_distance


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def numpy_mmd(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], x.shape[0]
    k = lambda p, q: (p @ q.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


@pytest.mark.parametrize("shift", [0.0, 0.5, 3.0])
def test_frechet_matches_scipy(shift):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 8))
    b = rng.normal(size=(250, 8)) @ rng.normal(size=(8, 8)) * 0.5 + shift
    ours = frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert ours == pytest.approx(scipy_frechet(a.astype(np.float32).astype(np.float64),
                                               b.astype(np.float32).astype(np.float64)), rel=1e-6, abs=1e-6)


def test_frechet_of_a_set_with_itself_is_zero_and_grows_with_shift():
    x = torch.randn(200, 6)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(x, x + 1.0) == pytest.approx(6.0, rel=1e-6)  # |mu shift|^2 = 6


def test_kernel_distance_matches_numpy_on_one_full_subset():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 5)) + 0.3
    ours = kernel_distance(torch.from_numpy(x), torch.from_numpy(y).float(), subset_size=64,
                           num_subsets=1)
    # a subset as large as the set is a permutation of it: same value as the full formula
    assert ours == pytest.approx(numpy_mmd(x, y.astype(np.float32).astype(np.float64)), rel=1e-9)


def test_kernel_distance_is_near_zero_for_one_distribution_and_positive_for_two():
    same = kernel_distance(torch.randn(400, 4), torch.randn(400, 4), subset_size=200, num_subsets=20)
    apart = kernel_distance(torch.randn(400, 4), torch.randn(400, 4) + 1, subset_size=200,
                            num_subsets=20)
    assert abs(same) < 0.02 * apart  # unbiased: ~0 up to sampling noise
    assert apart > 1.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="num_subsets"):
        kernel_distance(torch.randn(5, 3), torch.randn(5, 3), num_subsets=0)
    with pytest.raises(Exception, match="d"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
