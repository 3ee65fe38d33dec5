"""Flow matching and the shared per-frame timestep helper, against direct formulas."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from avblocks.diffusion import FlowMatching, broadcast_timesteps, shift_time
from avblocks.diffusion.flow import clean_frame_weight
from avblocks.diffusion.timesteps import hold_clean_timesteps, keep_clean_frames

# ---------------------------------------------------------------- broadcast helper


def test_broadcast_per_sample_and_per_frame_put_values_on_the_right_axes():
    x = torch.zeros(2, 3, 4, 5, 6)
    t = torch.tensor([0.25, 0.5])
    assert broadcast_timesteps(t, x).shape == (2, 1, 1, 1, 1)
    tf = torch.arange(8.0).reshape(2, 4)
    out = broadcast_timesteps(tf, x)
    assert out.shape == (2, 1, 4, 1, 1)
    for b in range(2):
        for k in range(4):
            assert out[b, 0, k, 0, 0] == tf[b, k]
    # another frame axis, given from the end
    out = broadcast_timesteps(torch.arange(12.0).reshape(2, 6), x, frame_dim=-1)
    assert out.shape == (2, 1, 1, 1, 6)


def test_broadcast_errors_name_b_and_t():
    x = torch.zeros(2, 3, 4, 5)
    with pytest.raises(ValueError, match="b=3"):
        broadcast_timesteps(torch.zeros(3), x)
    with pytest.raises(ValueError, match="t=5.*t=4"):
        broadcast_timesteps(torch.zeros(2, 5), x)
    with pytest.raises(ValueError, match=r"`b t`"):
        broadcast_timesteps(torch.zeros(2, 4, 1), x)
    with pytest.raises(ValueError, match="frame_dim"):
        broadcast_timesteps(torch.zeros(2, 4), x, frame_dim=0)


def test_hold_clean_promotes_to_per_frame_and_keep_clean_is_exact():
    x = torch.randn(2, 3, 4, 5)
    mask = torch.tensor([[True, False, False, True], [False, False, False, False]])
    t = hold_clean_timesteps(torch.tensor([0.3, 0.9]), x, mask)
    expected = torch.tensor([[0.0, 0.3, 0.3, 0.0], [0.9, 0.9, 0.9, 0.9]])
    assert torch.equal(t, expected)
    fixed = torch.randn(2, 3, 4, 5)
    out = keep_clean_frames(x, mask, fixed)
    assert torch.equal(out[0, :, 0], fixed[0, :, 0]) and torch.equal(out[0, :, 3], fixed[0, :, 3])
    assert torch.equal(out[0, :, 1:3], x[0, :, 1:3]) and torch.equal(out[1], x[1])
    with pytest.raises(ValueError, match="fixed"):
        keep_clean_frames(x, mask, None)
    with pytest.raises(ValueError, match="bool"):
        keep_clean_frames(x, mask.float(), fixed)


# ---------------------------------------------------------------- path and target


def test_interpolate_per_sample_matches_formula():
    fm = FlowMatching()
    x0, noise = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    t = torch.tensor([0.0, 0.3, 1.0])
    out = fm.interpolate(x0, noise, t)
    for b in range(3):
        tb = float(t[b])
        assert torch.allclose(out[b], (1 - tb) * x0[b] + tb * noise[b], atol=1e-6)
    assert torch.equal(out[0], x0[0]) and torch.equal(out[2], noise[2])
    assert torch.equal(fm.velocity(x0, noise), noise - x0)


@given(
    b=st.integers(1, 3),
    frames=st.integers(1, 5),
    rest=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    frame_dim=st.integers(1, 3),
)
def test_per_frame_interpolation_is_frame_by_frame_per_sample_formula(b, frames, rest, frame_dim):
    """Each frame is noised at its own level, as if alone with a per-sample timestep."""
    shape = [b, 2, 3, *rest]
    frame_dim = min(frame_dim, len(shape) - 1)
    shape[frame_dim] = frames
    x0, noise = torch.randn(shape), torch.randn(shape)
    t = torch.rand(b, frames)
    fm = FlowMatching(frame_dim=frame_dim)
    out = fm.interpolate(x0, noise, t)
    for k in range(frames):
        sl = [slice(None)] * len(shape)
        sl[frame_dim] = slice(k, k + 1)
        sl = tuple(sl)
        alone = FlowMatching(frame_dim=frame_dim).interpolate(x0[sl], noise[sl], t[:, k])
        expected = (1 - t[:, k]).reshape([b] + [1] * (len(shape) - 1)) * x0[sl] + t[:, k].reshape(
            [b] + [1] * (len(shape) - 1)
        ) * noise[sl]
        assert torch.allclose(out[sl], expected, atol=1e-6)
        assert torch.allclose(out[sl], alone, atol=1e-6)


def test_predict_x0_inverts_the_path():
    fm = FlowMatching()
    x0, noise = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    t = torch.rand(2, 4)
    x_t = fm.interpolate(x0, noise, t)
    assert torch.allclose(fm.predict_x0(noise - x0, x_t, t), x0, atol=1e-5)


# ---------------------------------------------------------------- timestep distributions


def test_shift_time_formula_and_endpoints():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for s in (0.5, 1.0, 3.0):
        expected = torch.tensor(
            [s * u / (1 + (s - 1) * u) for u in t.tolist()], dtype=torch.float64
        )
        assert torch.allclose(shift_time(t, s), expected)
    assert shift_time(t, 3.0)[0] == 0 and shift_time(t, 3.0)[-1] == 1
    assert (shift_time(t, 3.0) >= t).all()  # s > 1 moves mass towards noise
    with pytest.raises(ValueError, match=r"shift \(0"):
        shift_time(t, 0.0)


def test_training_timesteps_follow_their_distributions():
    n = 4000
    g = torch.Generator().manual_seed(1)
    uni = FlowMatching().sample_timesteps(n, generator=g).numpy()
    assert stats.kstest(uni, "uniform").pvalue > 1e-3
    ln = FlowMatching(time_distribution="logit_normal", logit_mean=0.5, logit_std=0.8)
    t = ln.sample_timesteps(n, generator=g).double().numpy()
    assert stats.kstest(np.log(t / (1 - t)), stats.norm(0.5, 0.8).cdf).pvalue > 1e-3
    # shifted uniform: t = s u / (1 + (s-1) u)  =>  P(t <= y) = y / (s - (s-1) y)
    s = 3.0
    ts = FlowMatching(shift=s).sample_timesteps(n, generator=g).double().numpy()
    assert stats.kstest(ts, lambda y: y / (s - (s - 1) * y)).pvalue > 1e-3
    assert stats.kstest(ts, "uniform").pvalue < 1e-6  # the shift did something
    per_frame = FlowMatching().sample_timesteps(3, frames=6, generator=g)
    assert per_frame.shape == (3, 6) and per_frame.std(dim=1).min() > 0


# ---------------------------------------------------------------- loss


class Recorder(torch.nn.Module):
    """A linear model that records what it was called with."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, x, t, scale=1.0):
        self.calls.append((x.detach().clone(), t.detach().clone()))
        return self.w * x * scale


def test_loss_matches_direct_mse_and_passes_per_sample_t():
    fm = FlowMatching()
    model = Recorder()
    x0, noise = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    t = torch.tensor([0.1, 0.5, 0.9])
    loss = fm.loss(model, x0, t=t, noise=noise, model_kwargs={"scale": 2.0})
    x_t = torch.stack([(1 - t[i]) * x0[i] + t[i] * noise[i] for i in range(3)])
    expected = ((0.5 * x_t * 2.0 - (noise - x0)) ** 2).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.equal(model.calls[0][1], t)  # the form given: `b`
    loss.backward()
    assert model.w.grad is not None and model.w.grad != 0


def test_loss_holds_clean_frames_and_excludes_them():
    fm = FlowMatching()
    model = Recorder()
    x0, noise = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    mask = torch.tensor([[True, True, True, False], [False, False, False, False]])
    t = torch.tensor([0.7, 0.4])
    loss = fm.loss(model, x0, t=t, noise=noise, clean_mask=mask)
    x_t, t_seen = model.calls[0]
    assert torch.equal(t_seen, torch.tensor([[0.0, 0.0, 0.0, 0.7], [0.4, 0.4, 0.4, 0.4]]))
    assert torch.equal(x_t[0, :, :3], x0[0, :, :3])  # clean frames are the data, exactly
    keep = [(0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    per_frame = [
        ((0.5 * x_t[b, :, k] - (noise[b, :, k] - x0[b, :, k])) ** 2).mean() for b, k in keep
    ]
    assert torch.allclose(loss, torch.stack(per_frame).mean(), atol=1e-6)

    # a model that is wrong only on the clean frames has the same loss
    def wrong_on_clean(x, t):
        out = 0.5 * x
        return torch.where(mask[:, None, :, None], out + 100.0, out)

    assert torch.allclose(fm.loss(wrong_on_clean, x0, t=t, noise=noise, clean_mask=mask), loss)


def test_loss_per_frame_t_is_passed_per_frame():
    model = Recorder()
    t = torch.rand(2, 4)
    FlowMatching().loss(model, torch.randn(2, 3, 4, 5), t=t)
    assert torch.equal(model.calls[0][1], t)


def test_bad_inputs_name_the_values():
    fm = FlowMatching()
    x0 = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"\[0, 1\].*max 1.5"):
        fm.loss(Recorder(), x0, t=torch.tensor([0.2, 1.5]))
    with pytest.raises(ValueError, match="t=3"):
        fm.loss(Recorder(), x0, t=torch.rand(2, 3))
    with pytest.raises(ValueError, match="time_distribution"):
        FlowMatching(time_distribution="beta")
    with pytest.raises(ValueError, match=r"logit_std \(0"):
        FlowMatching(time_distribution="logit_normal", logit_std=0.0)
    with pytest.raises(ValueError, match="model output has shape"):
        fm.loss(lambda x, t: x[:, :1], x0)


def test_loss_weight_multiplies_each_squared_error_and_is_checked():
    fm = FlowMatching()
    x0, noise = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    t = torch.tensor([0.3, 0.8])
    mask = torch.tensor([[True, False, False, False], [False, False, False, False]])
    weight = torch.rand(2, 1, 4, 5) * 3  # per sample, frame and pixel; shared by the channels
    loss = fm.loss(Recorder(), x0, t=t, noise=noise, clean_mask=mask, weight=weight)
    per_frame = []
    for b in range(2):
        x_t = (1 - t[b]) * x0[b] + t[b] * noise[b]
        for k in range(4):
            if not mask[b, k]:
                err = (0.5 * x_t[:, k] - (noise[b, :, k] - x0[b, :, k])) ** 2
                per_frame.append((err * weight[b, :, k]).mean())
    assert torch.allclose(loss, torch.stack(per_frame).mean(), atol=1e-6)
    ones = fm.loss(Recorder(), x0, t=t, noise=noise, clean_mask=mask, weight=torch.ones(4, 5))
    assert torch.allclose(ones, fm.loss(Recorder(), x0, t=t, noise=noise, clean_mask=mask), atol=1e-7)
    with pytest.raises(ValueError, match=r"weight has shape \(2, 3\)"):
        fm.loss(Recorder(), x0, t=t, noise=noise, weight=torch.ones(2, 3))


def test_clean_frame_weight_is_t_squared_per_frame_shaped_for_the_data():
    t = torch.tensor([[0.5, 0.01, 1.0], [0.2, 0.3, 0.0]])
    weight = clean_frame_weight(t, 5)
    assert weight.shape == (2, 1, 3, 1, 1)
    expected = [[0.25, 0.05**2, 1.0], [0.04, 0.09, 0.05**2]]  # the cleanest levels floored at min_time
    assert torch.allclose(weight[:, 0, :, 0, 0], torch.tensor(expected))
    assert clean_frame_weight(t, 3).shape == (2, 1, 3)  # a packed latent: b c L
    # t times the velocity error is the clean estimate's error: x0_hat = x_t - t v_hat
    x0, noise, v_hat = torch.randn(3, 2, 2, 4, 4, 4)
    tt = torch.rand(2, 4)
    t5 = tt[:, None, :, None, None]
    x_t = (1 - t5) * x0 + t5 * noise  # the rectified-flow path, written out
    weighted = clean_frame_weight(tt, 5, min_time=0.0) * (v_hat - FlowMatching().velocity(x0, noise)) ** 2
    x0_hat = x_t - t5 * v_hat
    assert torch.allclose(weighted, (x0_hat - x0) ** 2, atol=1e-5)
    with pytest.raises(ValueError, match="t must be b frames"):
        clean_frame_weight(torch.rand(4), 5)
