"""EMA of weights: the recurrence against a hand computation, warm-up, swap/restore, checkpoints."""

import io

import pytest
import torch
from torch import nn

from avblocks.diffusion import EMA


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()


def perturb(model, step):
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(torch.sin(torch.arange(p.numel(), dtype=p.dtype) + step + i).view_as(p))
        model[1].running_mean.fill_(float(step))


@pytest.mark.parametrize("warmup", [False, True])
def test_recurrence_is_exact(warmup):
    model, decay = make_model(), 0.72  # warm-up reaches 0.72 at n = 23
    ema = EMA(model, decay=decay, warmup=warmup)
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    decays = []
    for n in range(25):
        perturb(model, n)
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        decays.append(ema.current_decay())
        ema.update(model)
        for name, p in model.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach()
    for name, value in expected.items():
        torch.testing.assert_close(ema.shadow[name], value, rtol=1e-12, atol=1e-12)
    if warmup:
        assert decays[:3] == pytest.approx([0.1, 2 / 11, 3 / 12]) and decays[22] < decay
        assert decays[23] == decays[24] == decay
    else:
        assert decays == [decay] * 25
    assert torch.equal(ema.buffers["1.running_mean"], torch.full((4,), 24.0, dtype=torch.float64))


def test_swapped_uses_ema_inside_and_restores_exactly():
    model = make_model()
    ema = EMA(model, decay=0.5)
    perturb(model, 1)
    ema.update(model)
    perturb(model, 2)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.swapped(model):
        for name, p in model.named_parameters():
            assert torch.equal(p, ema.shadow[name])
        assert not torch.equal(model[0].weight, own["0.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k])
    with pytest.raises(RuntimeError), ema.swapped(model):
        raise RuntimeError("inside")
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k])


def test_copy_to_and_module_state_dict():
    model = make_model()
    ema = EMA(model, decay=0.5)
    perturb(model, 3)
    ema.update(model)
    fresh = make_model()
    fresh.load_state_dict(ema.module_state_dict(model))
    for name, p in fresh.named_parameters():
        assert torch.equal(p, ema.shadow[name])
    ema.copy_to(model)
    for name, p in model.named_parameters():
        assert torch.equal(p, ema.shadow[name])


def test_state_dict_round_trip_continues_identically():
    model = make_model()
    ema = EMA(model, decay=0.8, warmup=True)
    for n in range(3):
        perturb(model, n)
        ema.update(model)
    buffer = io.BytesIO()
    torch.save(ema.state_dict(), buffer)
    buffer.seek(0)
    restored = EMA(make_model(), decay=0.1)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.num_updates == 3 and restored.decay == 0.8 and restored.warmup
    perturb(model, 7)
    ema.update(model)
    restored.update(model)
    for name in ema.shadow:
        assert torch.equal(ema.shadow[name], restored.shadow[name])


def test_trainable_only_skips_frozen_parameters():
    model = make_model()
    model[0].requires_grad_(False)
    ema = EMA(model, decay=0.0, trainable_only=True)
    assert "0.weight" not in ema.shadow and "2.weight" in ema.shadow
    frozen = model[0].weight.clone()
    perturb(model, 1)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["2.weight"], model[2].weight)  # decay 0: a copy
    with torch.no_grad():
        model[0].weight.copy_(frozen)
    ema.copy_to(model)
    assert torch.equal(model[0].weight, frozen)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"decay \(1.5\)"):
        EMA(make_model(), decay=1.5)
    ema = EMA(make_model())
    with pytest.raises(ValueError, match="lacks"):
        ema.update(nn.Linear(3, 4).double())
    state = ema.state_dict()
    state["shadow"].pop("0.bias")
    with pytest.raises(ValueError, match="missing.*0.bias"):
        EMA(make_model()).load_state_dict(state)
