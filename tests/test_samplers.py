"""Samplers on a problem with a known exact answer: Gaussian data N(mu, s^2).

Flow matching, x_t = (1 - t) x0 + t n: x_t ~ N((1 - t) mu, var_t), var_t = (1 - t)^2 s^2 + t^2, and
the exact velocity is E[n - x0 | x_t = x] = -mu + (t - (1 - t) s^2) / var_t * (x - (1 - t) mu).
The ODE keeps z = (x_t - m_t) / sqrt(var_t) constant (differentiate m_t + sqrt(var_t) z: it
is the velocity above), so from x_1 = n it ends at x_0 = mu + s n exactly.

DDPM, x_t = a x0 + g eps: E[x0 | x_t = x] = mu + a s^2 / (a^2 s^2 + g^2) (x - a mu). The
probability-flow ODE likewise keeps z = (x - a mu) / sqrt(a^2 s^2 + g^2) constant, so from
x at step T-1 it ends at mu + s z.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.diffusion import (
    DDPM,
    DDIMSampler,
    DPMSolverPP2MSampler,
    FlowEulerSampler,
    FlowHeunSampler,
    ddpm_timesteps,
    flow_timesteps,
)

MU, S = 0.7, 0.4
DDPM_LINEAR = DDPM()


def expand(t, x):
    """Plain reshape of `b` / `b t` levels to `(b, 1, t|1, 1...)` (frame axis 2)."""
    shape = [x.shape[0], 1, t.shape[1] if t.ndim == 2 else 1] + [1] * (x.ndim - 3)
    return t.reshape(shape).to(x.dtype)


def flow_velocity(x, t, mu=MU):
    t = expand(t, x)
    var = (1 - t) ** 2 * S**2 + t**2
    return -mu + (t - (1 - t) * S**2) / var * (x - (1 - t) * mu)


def make_ddpm_model(ddpm, prediction="epsilon"):
    ab = torch.cat([torch.ones(1, dtype=torch.float64), ddpm.alphas_cumprod])

    def model(x, t, mu=MU):
        a = expand(ab[t + 1].sqrt(), x)
        g = expand((1 - ab[t + 1]).sqrt(), x)
        x0 = mu + a * S**2 / (a**2 * S**2 + g**2) * (x - a * mu)
        eps = (x - a * x0) / g
        return eps if prediction == "epsilon" else a * eps - g * x0

    return model


def ddpm_exact(ddpm, x, start=999, mu=MU):
    abar = float(ddpm.alphas_cumprod[start])
    a, g = math.sqrt(abar), math.sqrt(1 - abar)
    return mu + S * (x - a * mu) / math.sqrt(a**2 * S**2 + g**2)


@pytest.fixture
def noise():
    return torch.randn(4, 2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def max_err(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- flow: Euler and Heun


def test_euler_and_heun_reach_the_exact_ode_solution_with_orders_1_and_2(noise):
    exact = MU + S * noise
    euler = {
        n: max_err(FlowEulerSampler().sample(flow_velocity, noise, n, progress=False), exact)
        for n in (10, 20, 40, 200)
    }
    heun = {
        n: max_err(FlowHeunSampler().sample(flow_velocity, noise, n, progress=False), exact)
        for n in (10, 20, 40, 200)
    }
    assert euler[200] < 0.012 and heun[200] < 3e-5  # converge to the closed form
    assert 1.7 < euler[20] / euler[40] < 2.3  # first order: halving h halves the error
    assert 3.0 < heun[20] / heun[40] < 5.0  # second order: a quarter
    assert heun[20] < euler[20] / 20


def test_shifted_grid_still_converges(noise):
    exact = MU + S * noise
    out = FlowHeunSampler(shift=3.0).sample(flow_velocity, noise, 100, progress=False)
    assert max_err(out, exact) < 1e-3
    grid = flow_timesteps(4, shift=3.0)
    assert torch.allclose(grid, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))


def test_flow_sample_statistics():
    noise = torch.randn(8000, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = FlowHeunSampler().sample(flow_velocity, noise, 10, progress=False)
    assert abs(out.mean().item() - MU) < 0.02 and abs(out.std().item() - S) < 0.01


# ---------------------------------------------------------------- DDPM: DDIM and DPM-Solver++(2M)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_ddim_converges_to_the_probability_flow_solution_and_dpm_beats_it(noise, prediction):
    ddpm = DDPM(prediction=prediction)
    model = make_ddpm_model(ddpm, prediction)
    exact = ddpm_exact(ddpm, noise)
    ddim = {
        n: max_err(DDIMSampler(ddpm).sample(model, noise, n, progress=False), exact)
        for n in (20, 100, 200)
    }
    dpm = {
        n: max_err(DPMSolverPP2MSampler(ddpm).sample(model, noise, n, progress=False), exact)
        for n in (20, 50, 100)
    }
    assert ddim[200] < 0.03 and dpm[100] < 3e-3
    assert 1.6 < ddim[100] / ddim[200] < 2.4  # first order
    assert dpm[50] / dpm[100] > 2.5  # second order
    assert dpm[20] < ddim[20] / 1.8


def test_ddpm_sample_statistics_ddim_eta1_and_dpm():
    ddpm = DDPM(schedule="cosine")
    model = make_ddpm_model(ddpm)
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(8000, 1, 2, dtype=torch.float64, generator=g)
    # ancestral DDIM shrinks the spread at few steps (0.37 at 50 steps): use many
    for sampler, steps in ((DDIMSampler(ddpm, eta=1.0), 500), (DPMSolverPP2MSampler(ddpm), 20)):
        out = sampler.sample(model, noise, steps, generator=g, progress=False)
        assert abs(out.mean().item() - MU) < 0.02, sampler
        assert abs(out.std().item() - S) < 0.02, sampler


def test_ddim_step_matches_song_et_al(noise):
    """One DDIM step against the paper's formula; eta = 1 between neighbouring steps has the
    DDPM posterior variance beta_t (1 - abar_{t-1}) / (1 - abar_t)."""
    ddpm = DDPM()
    model = make_ddpm_model(ddpm)
    ab = ddpm.alphas_cumprod
    for t, t_prev in ((600, 550), (300, 299)):
        a, a_prev = float(ab[t]), float(ab[t_prev])
        eps = model(noise, torch.full((4,), t))
        x0 = (noise - math.sqrt(1 - a) * eps) / math.sqrt(a)
        for eta in (0.0, 0.5, 1.0):
            sig = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
            z = torch.randn(
                noise.shape, generator=torch.Generator().manual_seed(0), dtype=noise.dtype
            )
            expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sig**2) * eps + sig * z
            out = DDIMSampler(ddpm, eta=eta).step(
                model,
                noise,
                torch.full((4,), t),
                torch.full((4,), t_prev),
                generator=torch.Generator().manual_seed(0),
            )
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
            if eta == 1.0 and t_prev == t - 1:
                posterior = float(ddpm.betas[t]) * (1 - a_prev) / (1 - a)
                assert math.isclose(sig**2, posterior, rel_tol=1e-9)


def test_dpm_solver_pp_2m_steps_match_lu_et_al(noise):
    """Two steps against the paper's form D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1}/h_i."""
    ddpm = DDPM(schedule="cosine")
    model = make_ddpm_model(ddpm)
    ab = ddpm.alphas_cumprod
    alpha = {t: math.sqrt(float(ab[t])) for t in (800, 600, 400)}
    sigma = {t: math.sqrt(1 - float(ab[t])) for t in (800, 600, 400)}
    lam = {t: math.log(alpha[t] / sigma[t]) for t in alpha}

    def x0_of(x, t):
        return (x - sigma[t] * model(x, torch.full((4,), t))) / alpha[t]

    h0, h1 = lam[600] - lam[800], lam[400] - lam[600]
    x0_a = x0_of(noise, 800)
    x1 = sigma[600] / sigma[800] * noise - alpha[600] * (math.exp(-h0) - 1) * x0_a
    x0_b = x0_of(x1, 600)
    r = h0 / h1
    d = (1 + 1 / (2 * r)) * x0_b - 1 / (2 * r) * x0_a
    x2 = sigma[400] / sigma[600] * x1 - alpha[400] * (math.exp(-h1) - 1) * d
    out = DPMSolverPP2MSampler(ddpm).sample(
        model, noise, timesteps=torch.tensor([800, 600, 400]), progress=False
    )
    torch.testing.assert_close(out, x2, rtol=1e-10, atol=1e-10)


@given(
    T=st.integers(1, 2000), frac=st.floats(0, 1), spacing=st.sampled_from(["trailing", "linspace"])
)
def test_ddpm_grid_properties(T, frac, spacing):
    steps = max(1, round(frac * T))
    grid = ddpm_timesteps(T, steps, spacing)
    assert grid.shape == (steps + 1,) and grid[0] == T - 1 and grid[-1] == -1
    assert (grid[1:] < grid[:-1]).all() and grid[-2] >= 0  # distinct, decreasing, valid


def test_ddpm_grids():
    assert ddpm_timesteps(1000, 4).tolist() == [999, 749, 499, 249, -1]
    assert ddpm_timesteps(1000, 4, "linspace").tolist() == [999, 666, 333, 0, -1]
    with pytest.raises(ValueError, match=r"steps \(1001\)"):
        ddpm_timesteps(1000, 1001)


# ---------------------------------------------------------------- per-frame levels


SAMPLERS = [
    ("euler", lambda: FlowEulerSampler()),
    ("heun", lambda: FlowHeunSampler()),
    ("ddim", lambda: DDIMSampler(DDPM_LINEAR)),
    ("dpm", lambda: DPMSolverPP2MSampler(DDPM_LINEAR)),
]


def model_for(name):
    return flow_velocity if name in ("euler", "heun") else make_ddpm_model(DDPM_LINEAR)


def per_frame_grid(name, b, n=8):
    """(n+1, b, 3): three frames on different schedules (one finishes early)."""
    if name in ("euler", "heun"):
        cols = [
            flow_timesteps(n),
            flow_timesteps(n, shift=3.0),
            torch.cat([torch.linspace(0.6, 0.0, n - 2), torch.zeros(3)]),
        ]
    else:
        cols = [
            ddpm_timesteps(1000, n),
            ddpm_timesteps(1000, n, "linspace"),
            torch.cat(
                [
                    torch.linspace(600, 0, n - 2).round().long(),
                    torch.zeros(2, dtype=torch.long),
                    torch.tensor([-1]),
                ]
            ),
        ]
    grid = torch.stack(cols, dim=-1)  # n+1, 3
    return grid[:, None, :].expand(-1, b, -1).contiguous()


@pytest.mark.parametrize("name,make", SAMPLERS, ids=[n for n, _ in SAMPLERS])
def test_frames_on_different_schedules_are_independent(name, make):
    """A per-frame separable model: sampling all frames together equals each frame alone."""
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).view(1, 1, 3, 1)
    model = model_for(name)
    noise = torch.randn(2, 2, 3, 4, dtype=torch.float64)
    grid = per_frame_grid(name, 2)
    together = make().sample(model, noise, timesteps=grid, model_kwargs={"mu": mu}, progress=False)
    for k in range(3):
        alone = make().sample(
            model,
            noise[:, :, k : k + 1],
            timesteps=grid[:, :, k : k + 1],
            model_kwargs={"mu": mu[:, :, k : k + 1]},
            progress=False,
        )
        torch.testing.assert_close(together[:, :, k : k + 1], alone, rtol=1e-12, atol=1e-12)
    # frames 0, 1 (full schedules) land near their own data means; frame 2 moved too
    assert (together.mean(dim=(0, 1, 3))[:2] - mu.flatten()[:2]).abs().max() < 0.35
    assert (together[:, :, 2] - noise[:, :, 2]).abs().mean() > 0.1


@pytest.mark.parametrize("name,make", SAMPLERS, ids=[n for n, _ in SAMPLERS])
def test_clean_frames_stay_bit_identical_and_model_sees_t0(name, make):
    inner = model_for(name)
    seen = []

    def model(x, t):
        seen.append(t.clone())
        return inner(x, t)

    noise = torch.randn(2, 2, 4, 3, dtype=torch.float64)
    fixed = torch.randn(2, 2, 4, 3, dtype=torch.float64) * 5
    mask = torch.tensor([[True, False, False, False], [False, False, True, True]])
    out = make().sample(model, noise, 6, clean_mask=mask, fixed=fixed, progress=False)
    for b, k in ((0, 0), (1, 2), (1, 3)):
        assert torch.equal(out[b, :, k], fixed[b, :, k])
    assert not torch.allclose(out[0, :, 1], fixed[0, :, 1])
    assert all(t.shape == (2, 4) and (t[mask] == 0).all() and (t[~mask] >= 0).all() for t in seen)
    assert any((t[~mask] > 0).all() for t in seen)


@pytest.mark.parametrize("name,make", SAMPLERS, ids=[n for n, _ in SAMPLERS])
def test_step_takes_b_or_b_t_with_the_same_result(name, make):
    sampler, model = make(), model_for(name)
    x = torch.randn(2, 3, 4, 2, dtype=torch.float64)
    if name in ("euler", "heun"):
        t, t_next = torch.tensor([0.8, 0.5]), torch.tensor([0.6, 0.2])
    else:
        t, t_next = torch.tensor([800, 500]), torch.tensor([600, 200])
    per_sample = sampler.step(model, x, t, t_next)
    per_frame = sampler.step(model, x, t[:, None].expand(2, 4), t_next[:, None].expand(2, 4))
    mixed = sampler.step(model, x, t, t_next[:, None].expand(2, 4))
    if name == "dpm":
        per_sample, per_frame, mixed = per_sample[0], per_frame[0], mixed[0]
    torch.testing.assert_close(per_frame, per_sample, rtol=0, atol=1e-12)
    torch.testing.assert_close(mixed, per_sample, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- loop behaviour


def test_callback_progress_and_evaluation_count():
    calls, seen = [], []

    def model(x, t):
        calls.append(t)
        return flow_velocity(x, t)

    FlowHeunSampler().sample(
        model,
        torch.randn(2, 1, 2),
        5,
        progress=False,
        callback=lambda i, x, t: seen.append((i, float(t[0]))),
    )
    assert len(calls) == 10  # two evaluations per Heun step
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4] and seen[-1][1] == 0.0


def test_determinism_given_the_generator():
    ddpm = DDPM()
    model, noise = make_ddpm_model(ddpm), torch.randn(2, 2, 3, dtype=torch.float64)
    sampler = DDIMSampler(ddpm, eta=1.0)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sampler.sample(model, noise, 10, generator=g, progress=False)

    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))
    det = DPMSolverPP2MSampler(ddpm)
    assert torch.equal(
        det.sample(model, noise, 10, progress=False), det.sample(model, noise, 10, progress=False)
    )


def test_bad_inputs_name_the_values():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"steps \(0\)"):
        FlowEulerSampler().sample(flow_velocity, x, 0, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\].*max 1.5"):
        FlowEulerSampler().sample(flow_velocity, x, timesteps=torch.tensor([1.5, 0.0]))
    with pytest.raises(ValueError, match="non-increasing"):
        FlowEulerSampler().sample(flow_velocity, x, timesteps=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="t=5.*t=4"):
        FlowEulerSampler().step(flow_velocity, x, torch.rand(2, 5), torch.rand(2, 5))
    with pytest.raises(ValueError, match="b=3"):
        FlowEulerSampler().sample(flow_velocity, x, timesteps=torch.rand(2, 3).sort(0, True)[0])
    with pytest.raises(ValueError, match="fixed"):
        FlowEulerSampler().sample(flow_velocity, x, 2, clean_mask=torch.zeros(2, 3, dtype=bool))
    model = make_ddpm_model(DDPM_LINEAR)
    with pytest.raises(ValueError, match=r"all rows but the last.*min -1"):
        DDIMSampler(DDPM_LINEAR).sample(model, x, timesteps=torch.tensor([999, -1, -1]))
    with pytest.raises(ValueError, match=r"eta \(-1"):
        DDIMSampler(DDPM_LINEAR, eta=-1.0)
    with pytest.raises(ValueError, match=r"steps \(3\) disagrees"):
        DDIMSampler(DDPM_LINEAR).sample(model, x, 3, timesteps=torch.tensor([999, -1]))


@pytest.mark.slow
def test_loss_and_steps_compile_fullgraph():
    """The shape checks and value checks step aside under torch.compile (no graph break)."""
    from avblocks.diffusion import FlowMatching

    conv = torch.nn.Conv3d(2, 2, 1)

    def model(x, t):
        return conv(x) * (1 + t[:, None, :, None, None])

    x0, noise = torch.randn(2, 2, 4, 3, 3), torch.randn(2, 2, 4, 3, 3)
    t, mask = torch.rand(2, 4), torch.tensor([[True, False, False, False]] * 2)
    fm, euler, ddim = FlowMatching(), FlowEulerSampler(), DDIMSampler(DDPM_LINEAR)

    def loss(x0, t, noise, mask):
        return fm.loss(model, x0, t=t, noise=noise, clean_mask=mask)

    def flow_step(x, t, t_next, mask, fixed):
        return euler.step(model, x, t, t_next, clean_mask=mask, fixed=fixed)

    def ddim_step(x, t, t_next):
        return ddim.step(model, x, t, t_next)

    steps = torch.randint(0, 1000, (2, 4))
    cases = [
        (loss, (x0, t, noise, mask)),
        (flow_step, (x0, t, t / 2, mask, noise)),
        (ddim_step, (x0, steps, (steps - 100).clamp(min=-1))),
    ]
    with torch.no_grad():
        for fn, args in cases:
            torch.testing.assert_close(torch.compile(fn, fullgraph=True)(*args), fn(*args))
