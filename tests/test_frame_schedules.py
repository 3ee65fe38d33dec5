"""Per-frame schedules: every level of every frame and step against a plain-python reference,
and the reference frame kept bit-identical by the samplers."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.diffusion import FlowEulerSampler, FlowHeunSampler, FlowMatching
from avblocks.diffusion.schedules import (
    DiffusionForcingSchedule,
    PyramidSchedule,
    ReadSchedule,
    staggered_grid,
)


def base_level(i: int, steps: int, shift: float) -> float:
    """Plain python: linspace(1, 0, steps + 1)[i], then SD3's shift."""
    u = 1.0 - i / steps
    return shift * u / (1 + (shift - 1) * u)


def read_reference(steps, frames, motion, lag, shift):
    rows = []
    for i in range(steps + 1):
        row = []
        for k in range(frames):
            if k == 0:
                row.append(0.0)
            elif k <= motion:
                row.append(base_level(min(i + lag, steps), steps, shift))
            else:
                row.append(base_level(i, steps, shift))
        rows.append(row)
    return rows


@given(
    steps=st.integers(1, 12),
    frames=st.integers(2, 7),
    lag=st.integers(1, 3),
    motion=st.integers(1, 3),
    shift=st.sampled_from([1.0, 2.0, 0.5]),
)
def test_read_grid_matches_python_reference(steps, frames, lag, motion, shift):
    if lag > steps or motion > frames - 1:
        return
    sched = ReadSchedule(frames=frames, motion_frames=motion, lag=lag, steps=steps, shift=shift)
    grid, mask = sched.grid(steps, batch=2)
    ref = torch.tensor(read_reference(steps, frames, motion, lag, shift))
    assert grid.shape == (steps + 1, 2, frames)
    torch.testing.assert_close(grid[:, 0], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(grid[:, 1], ref, rtol=0, atol=1e-6)
    assert mask.tolist() == [[True] + [False] * (frames - 1)] * 2
    # the motion frames are strictly ahead of the rest until they reach 0
    if frames > motion + 1:
        ahead = grid[:-1, 0, 1] < grid[:-1, 0, motion + 1]
        assert ahead.all()


def test_read_grid_named_example():
    grid, _ = ReadSchedule(frames=4, steps=4).grid(4, batch=1)
    assert grid[:, 0].tolist() == [
        [0.0, 0.75, 1.0, 1.0],
        [0.0, 0.5, 0.75, 0.75],
        [0.0, 0.25, 0.5, 0.5],
        [0.0, 0.0, 0.25, 0.25],
        [0.0, 0.0, 0.0, 0.0],
    ]


@given(seed=st.integers(0, 2**31 - 1), lag=st.integers(1, 4), shift=st.sampled_from([1.0, 3.0]),
       dist=st.sampled_from(["uniform", "logit_normal"]))
def test_read_training_levels_match_the_documented_formula(seed, lag, shift, dist):
    sched = ReadSchedule(frames=5, motion_frames=1, lag=lag, steps=8, shift=shift,
                         time_distribution=dist)
    t, mask = sched.training_timesteps(6, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    if dist == "uniform":
        u = torch.rand(6, generator=g)
    else:
        u = torch.sigmoid(torch.randn(6, generator=g))
    for b in range(6):
        ub = float(u[b])
        t2 = shift * ub / (1 + (shift - 1) * ub)
        v = max(ub - lag / 8, 0.0)
        t1 = shift * v / (1 + (shift - 1) * v)
        assert t[b, 0].item() == 0.0 and mask[b, 0] and not mask[b, 1:].any()
        assert t[b, 1].item() == pytest.approx(t1, abs=1e-6)
        assert t[b, 2:].tolist() == pytest.approx([t2] * 3, abs=1e-6)
        assert t[b, 1] <= t[b, 2]


@given(steps=st.integers(1, 8), frames=st.integers(1, 6), stagger=st.integers(0, 3),
       shift=st.sampled_from([1.0, 2.0]))
def test_pyramid_grid_matches_python_reference(steps, frames, stagger, shift):
    sched = DiffusionForcingSchedule(frames=frames, stagger=stagger, shift=shift)
    grid, mask = sched.grid(steps, batch=1)
    rows = steps + 1 + stagger * (frames - 1)
    assert mask is None and grid.shape == (rows, 1, frames) == (sched.num_rows(steps), 1, frames)
    for i in range(rows):
        for k in range(frames):
            level = base_level(min(max(i - stagger * k, 0), steps), steps, shift)
            assert grid[i, 0, k].item() == pytest.approx(level, abs=1e-6)
    assert (grid[-1] == 0).all() and (grid[0, 0, 1:] == 1).all()
    assert (grid[1:] <= grid[:-1]).all()  # what the samplers require


def test_pyramid_training_rows_are_rows_of_the_grid():
    sched = PyramidSchedule(frames=4, stagger=2, train_steps=5)
    t, mask = sched.training_timesteps(300, generator=torch.Generator().manual_seed(1))
    grid, _ = sched.grid(5, batch=1)
    rows = {tuple(round(v, 5) for v in r) for r in grid[:-1, 0].tolist()}
    drawn = {tuple(round(v, 5) for v in r) for r in t.tolist()}
    assert mask is None and drawn == rows  # every trainable row, and nothing else
    assert (t[:, 1:] >= t[:, :-1]).all()


def test_diffusion_forcing_levels_are_independent_per_frame():
    sched = DiffusionForcingSchedule(frames=6)
    t, mask = sched.training_timesteps(4000, generator=torch.Generator().manual_seed(0))
    assert mask is None and t.shape == (4000, 6) and (t >= 0).all() and (t <= 1).all()
    corr = torch.corrcoef(t.T)
    assert (corr - torch.eye(6)).abs().max() < 0.06
    assert t.mean().item() == pytest.approx(0.5, abs=0.02)


class FrameMixer(torch.nn.Module):
    """A model whose output at each frame depends on every frame and on its timestep."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t):
        self.seen.append(t.clone())
        mix = x.mean(dim=2, keepdim=True)
        return torch.sin(3 * x) + mix + t[:, None, :, None, None]


@pytest.mark.parametrize("sampler", [FlowEulerSampler(), FlowHeunSampler()])
def test_reference_frame_stays_bit_identical_through_sampling(sampler):
    sched = ReadSchedule(frames=5, steps=6)
    grid, mask = sched.grid(6, batch=2)
    fixed = torch.zeros(2, 3, 5, 4, 4)
    fixed[:, :, 0] = torch.randn(2, 3, 4, 4)
    noise = torch.randn(2, 3, 5, 4, 4)
    start = FlowMatching().interpolate(fixed, noise, grid[0])
    model = FrameMixer()
    out = sampler.sample(model, start, timesteps=grid, clean_mask=mask, fixed=fixed, progress=False)
    assert torch.equal(out[:, :, 0], fixed[:, :, 0])
    assert not torch.equal(out[:, :, 1:], start[:, :, 1:])
    # the model saw each row of the grid (Heun: also the next row), reference always at 0
    assert torch.equal(model.seen[0], grid[0])
    assert all((seen[:, 0] == 0).all() for seen in model.seen)


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"motion_frames \(3\)"):
        ReadSchedule(frames=3, motion_frames=3)
    with pytest.raises(ValueError, match=r"lag \(5\)"):
        ReadSchedule(frames=3, lag=5, steps=4)
    with pytest.raises(ValueError, match=r"lag \(2\) must be <= the sampling steps \(1\)"):
        ReadSchedule(frames=3, lag=2).grid(1, batch=1)
    with pytest.raises(ValueError, match="non-increasing"):
        staggered_grid(torch.tensor([0.0, 1.0]), [0], batch=1)
    with pytest.raises(ValueError, match="time_distribution"):
        DiffusionForcingSchedule(frames=2, time_distribution="beta")
