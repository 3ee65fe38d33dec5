"""DDPM schedules, q_sample, prediction conversions and loss against the published formulas."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.diffusion import DDPM, convert_prediction, prediction_to_x0_eps, x0_eps_to_prediction


def test_linear_betas_and_alphas_cumprod_match_numpy():
    ddpm = DDPM()
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)  # DDPM / DiT
    np.testing.assert_allclose(ddpm.betas.numpy(), betas, rtol=1e-12)
    np.testing.assert_allclose(ddpm.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-10)


def test_cosine_betas_match_nichol_dhariwal():
    T, s = 1000, 0.008

    def abar(u):
        return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar(i + 1) / abar(i), 0.999) for i in range(T)]
    ddpm = DDPM(schedule="cosine")
    np.testing.assert_allclose(ddpm.betas.numpy(), betas, rtol=1e-10)
    assert ddpm.betas[-1] == 0.999  # the clip is active at the end
    # before clipping bites, alphas_cumprod is the normalised cosine itself
    expected = np.array([abar(i + 1) / abar(0) for i in range(T)])
    np.testing.assert_allclose(ddpm.alphas_cumprod.numpy()[:990], expected[:990], rtol=1e-9)


def test_q_sample_per_sample_matches_formula():
    ddpm = DDPM()
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    x0, noise = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    t = torch.tensor([0, 500, 999])
    out = ddpm.q_sample(x0, t, noise)
    for b in range(3):
        a = ab[int(t[b])]
        assert torch.allclose(out[b], math.sqrt(a) * x0[b] + math.sqrt(1 - a) * noise[b], atol=1e-6)
    assert torch.equal(ddpm.q_sample(x0, torch.full((3,), -1), noise), x0)  # level -1: clean


def test_q_sample_per_frame_noises_each_frame_at_its_level():
    ddpm = DDPM(schedule="cosine")
    x0, noise = torch.randn(2, 3, 6, 4, 4), torch.randn(2, 3, 6, 4, 4)
    t = torch.randint(0, 1000, (2, 6))
    out = ddpm.q_sample(x0, t, noise)
    for k in range(6):
        alone = ddpm.q_sample(x0[:, :, k], t[:, k], noise[:, :, k])
        assert torch.allclose(out[:, :, k], alone, atol=1e-6)
        for b in range(2):
            a = float(ddpm.alphas_cumprod[t[b, k]])
            direct = math.sqrt(a) * x0[b, :, k] + math.sqrt(1 - a) * noise[b, :, k]
            assert torch.allclose(out[b, :, k], direct, atol=1e-6)


@given(t=st.integers(0, 999), kind=st.sampled_from(["epsilon", "v", "x0"]))
def test_prediction_conversions_round_trip(t, kind):
    ddpm = DDPM(schedule="cosine")
    x0, eps = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    steps = torch.full((2,), t)
    alpha, sigma = ddpm.alpha_sigma(steps, x0)
    x_t = alpha * x0 + sigma * eps
    v_direct = alpha * eps - sigma * x0  # Salimans & Ho
    assert torch.allclose(x0_eps_to_prediction(x0, eps, alpha, sigma, "v"), v_direct)
    pred = x0_eps_to_prediction(x0, eps, alpha, sigma, kind)
    x0_back, eps_back = prediction_to_x0_eps(pred, x_t, alpha, sigma, kind)
    tol = dict(atol=1e-6, rtol=1e-6)
    assert torch.allclose(x0_back, x0, **tol) and torch.allclose(eps_back, eps, **tol)
    for other in ("epsilon", "v", "x0"):
        there = convert_prediction(pred, x_t, alpha, sigma, kind, other)
        back = convert_prediction(there, x_t, alpha, sigma, other, kind)
        assert torch.allclose(back, pred, **tol)


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, x, t):
        self.calls.append((x.detach().clone(), t.clone()))
        return self.w * x


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_loss_matches_direct_mse(prediction):
    ddpm = DDPM(prediction=prediction)
    ab = ddpm.alphas_cumprod
    model = Recorder()
    x0, noise = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    t = torch.tensor([3, 400, 990])
    loss = ddpm.loss(model, x0, t=t, noise=noise)
    a = ab[t].sqrt().float().view(3, 1, 1, 1)
    s = (1 - ab[t]).sqrt().float().view(3, 1, 1, 1)
    x_t = a * x0 + s * noise
    target = noise if prediction == "epsilon" else a * noise - s * x0
    assert torch.allclose(loss, ((0.5 * x_t - target) ** 2).mean(), atol=1e-6)
    assert torch.equal(model.calls[0][1], t)


def test_loss_holds_clean_frames():
    ddpm = DDPM(prediction="v")
    model = Recorder()
    x0, noise = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    mask = torch.tensor([[False, True, False, False], [True, True, True, True]])
    t = torch.tensor([[10, 20, 30, 40], [50, 60, 70, 80]])
    loss = ddpm.loss(model, x0, t=t, noise=noise, clean_mask=mask)
    x_t, t_seen = model.calls[0]
    assert torch.equal(t_seen, torch.tensor([[10, 0, 30, 40], [0, 0, 0, 0]]))
    assert torch.equal(x_t[0, :, 1], x0[0, :, 1]) and torch.equal(x_t[1], x0[1])
    target = ddpm.target(x0, noise, t_seen)
    per_frame = [((0.5 * x_t[0, :, k] - target[0, :, k]) ** 2).mean() for k in (0, 2, 3)]
    assert torch.allclose(loss, torch.stack(per_frame).mean(), atol=1e-6)


def test_bad_inputs_name_the_values():
    ddpm = DDPM()
    x0 = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"\[0, 999\].*max 1000"):
        ddpm.loss(Recorder(), x0, t=torch.tensor([0, 1000]))
    # the shape check (jaxtyping) or, with checks off, the DDPM itself refuses float steps
    with pytest.raises(Exception, match=r"integer|Int\["):
        ddpm.q_sample(x0, torch.tensor([0.5, 0.2]), x0)
    with pytest.raises(ValueError, match="t=5"):
        ddpm.q_sample(x0, torch.zeros(2, 5, dtype=torch.long), x0)
    with pytest.raises(ValueError, match="schedule"):
        DDPM(schedule="sqrt")
    with pytest.raises(ValueError, match="prediction"):
        DDPM(prediction="score")
    with pytest.raises(ValueError, match=r"num_timesteps \(0"):
        DDPM(num_timesteps=0)
