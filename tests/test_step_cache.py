"""Step caches (avblocks.dit.cache): exactness at threshold 0, the skip rules against a
hand-computed reference, statistics, lifecycle, and genericity over DiT-style stacks."""

import pytest
import torch
from torch import nn

from avblocks.diffusion import ClassifierFreeGuidance, FlowEulerSampler
from avblocks.dit.blocks import DiTBlock
from avblocks.dit.cache import (
    CacheStats,
    FirstBlockCache,
    TeaCache,
    fit_rescale,
    relative_l1,
)
from avblocks.dit.modulation import modulate
from avblocks.dit.stdit import STDiT


def _randomise(model: nn.Module) -> nn.Module:
    """Non-zero adaLN and final layer, so every block does something (a fresh DiT is 0)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer" in name:
                p.normal_(0, 0.05)
    return model.eval()


def _stdit() -> STDiT:
    return _randomise(
        STDiT(in_channels=2, side=8, frames=6, patch=2, hidden_size=32, depth=3, num_heads=2,
              num_classes=3)
    )


def _sample(model: STDiT, steps: int = 5) -> torch.Tensor:
    noise = torch.randn(2, 2, 6, 8, 8, generator=torch.Generator().manual_seed(0))
    guided = ClassifierFreeGuidance(model, scale=2.0, null_label=model.null_label)
    return FlowEulerSampler().sample(
        guided, noise, steps, model_kwargs={"y": torch.tensor([0, 2])}, progress=False
    )


@pytest.mark.parametrize("policy", [FirstBlockCache, TeaCache])
def test_threshold_zero_reproduces_uncached_sampling_exactly(policy):
    model = _stdit()
    reference = _sample(model)
    with policy(model, threshold=0.0) as cache:
        cached = _sample(model)
        assert cache.stats.skipped == 0 and cache.stats.computed == 5
    assert torch.equal(cached, reference)


class _TinyDiT(nn.Module):
    """A facebookresearch-style stack: DiT blocks on ``b n d`` with ``b d`` conditioning."""

    def __init__(self, depth: int = 3, d: int = 16):
        super().__init__()
        self.blocks = nn.ModuleList(DiTBlock(hidden_size=d, num_heads=2) for _ in range(depth))

    def forward_blocks(self, tokens, c):
        for block in self.blocks:
            tokens = block(tokens, c)
        return tokens

    def forward(self, tokens, c):
        return self.forward_blocks(tokens, c)


def _tiny_dit() -> _TinyDiT:
    return _randomise(_TinyDiT())


def _inputs(seed: int, b: int = 2, n: int = 5, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g), torch.randn(b, d, generator=g)


@torch.no_grad()
def test_first_block_cache_skip_reuses_rest_residual_of_last_computed_call():
    model = _tiny_dit()
    (x1, c1), (x2, c2), (x3, c3) = _inputs(0), _inputs(1), _inputs(2)
    b0, rest = model.blocks[0], list(model.blocks[1:])

    def run_rest(h, c):
        for block in rest:
            h = block(h, c)
        return h

    h1 = b0(x1, c1)
    rest_residual = run_rest(h1, c1) - h1
    with FirstBlockCache(model, threshold=float("inf")) as cache:
        out1 = model(x1, c1)
        out2 = model(x2, c2)
        out3 = model(x3, c3)
        assert (cache.stats.computed, cache.stats.skipped) == (1, 2)
    assert torch.equal(out1, run_rest(h1, c1))
    # skipped calls: their own first block + the residual cached at call 1 (not call 2)
    torch.testing.assert_close(out2, b0(x2, c2) + rest_residual, rtol=0, atol=1e-6)
    torch.testing.assert_close(out3, b0(x3, c3) + rest_residual, rtol=0, atol=1e-6)


@torch.no_grad()
def test_first_block_cache_decides_on_change_against_threshold():
    model = _tiny_dit()
    (x1, c1), (x2, c2) = _inputs(0), _inputs(1)
    r1 = model.blocks[0](x1, c1) - x1
    r2 = model.blocks[0](x2, c2) - x2
    expected = (r2 - r1).abs().mean() / r1.abs().mean()
    for threshold, skipped in ((float(expected) * 1.01, 1), (float(expected) * 0.99, 0)):
        with FirstBlockCache(model, threshold=threshold) as cache:
            model(x1, c1)
            model(x2, c2)
        assert cache.stats.skipped == skipped
        torch.testing.assert_close(torch.tensor(cache.stats.changes[1]), expected)


@torch.no_grad()
def test_teacache_accumulates_change_of_modulated_input_and_reuses_stack_residual():
    model = _tiny_dit()
    calls = [_inputs(s) for s in range(4)]
    block = model.blocks[0]

    def modulated(x, c):
        shift, scale = block.adaLN_modulation(c)[:2]
        return modulate(block.norm1(x), shift[:, None], scale[:, None])

    m = [modulated(x, c) for x, c in calls]
    deltas = [float((m[i] - m[i - 1]).abs().mean() / m[i - 1].abs().mean()) for i in (1, 2, 3)]
    # threshold between the first delta and the sum of the first two: call 2 skipped,
    # call 3 computes (accumulator reached the threshold) and resets, call 4 skipped again
    # only if its own delta is under the threshold
    threshold = deltas[0] + 0.5 * deltas[1]
    with TeaCache(model, threshold=threshold) as cache:
        outs = [model(x, c) for x, c in calls]
    stack_residual = model(*calls[0]) - calls[0][0]
    torch.testing.assert_close(outs[1], calls[1][0] + stack_residual, rtol=0, atol=1e-6)
    assert torch.equal(outs[2], model(*calls[2]))
    assert cache.stats.computed + cache.stats.skipped == 4
    expected_last_skipped = deltas[2] < threshold
    assert cache.stats.skipped == 1 + expected_last_skipped
    torch.testing.assert_close(torch.tensor(cache.stats.changes[1:]), torch.tensor(deltas))


@torch.no_grad()
def test_teacache_rescale_polynomial_is_applied_before_accumulating():
    model = _tiny_dit()
    calls = [_inputs(s) for s in range(2)]
    with TeaCache(model, threshold=0.0) as probe:
        for x, c in calls:
            model(x, c)
    delta = probe.stats.changes[1]
    # rescale 2 * delta: a threshold of 1.5 delta skips without rescale but not with it
    for rescale, skipped in ((None, 1), ((2.0, 0.0), 0)):
        with TeaCache(model, threshold=1.5 * delta, rescale=rescale) as cache:
            for x, c in calls:
                model(x, c)
        assert cache.stats.skipped == skipped


def test_fit_rescale_recovers_a_polynomial():
    x = torch.linspace(0.01, 0.5, 20)
    y = 3 * x**2 - 0.5 * x + 0.1
    coefficients = fit_rescale(x.tolist(), y.tolist(), degree=2)
    torch.testing.assert_close(torch.tensor(coefficients), torch.tensor([3.0, -0.5, 0.1]),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="degree"):
        fit_rescale([0.1, 0.2], [0.1, 0.2], degree=2)


def test_relative_l1_matches_formula():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    assert relative_l1(a, b) == pytest.approx(float((a - b).abs().sum() / b.abs().sum()), rel=1e-5)
    assert relative_l1(torch.zeros(2), torch.zeros(2)) == 0.0
    assert relative_l1(torch.ones(2), torch.zeros(2)) == float("inf")


@torch.no_grad()
def test_reset_shape_change_and_warmup_force_computation():
    model = _tiny_dit()
    x, c = _inputs(0)
    cache = FirstBlockCache(model, threshold=float("inf"), warmup=2)
    model(x, c), model(x, c), model(x, c)
    assert (cache.stats.computed, cache.stats.skipped) == (2, 1)
    xb, cb = _inputs(0, b=3)
    model(xb, cb)  # new batch size: nothing to reuse
    assert cache.stats.computed == 3
    cache.reset()
    assert str(cache.stats) == str(CacheStats())
    model(x, c)
    assert (cache.stats.computed, cache.stats.skipped) == (1, 0)
    cache.detach()


def test_attach_detach_and_grad_bypass():
    model = _tiny_dit()
    original = model.forward_blocks
    cache = TeaCache(model, threshold=float("inf"))
    assert model.forward_blocks != original
    with pytest.raises(ValueError, match="already wrapped"):
        FirstBlockCache(model, threshold=0.1)
    x, c = _inputs(0)
    x.requires_grad_(True)
    model(x, c).sum().backward()  # gradients flow through the real stack, not the cache
    assert cache.stats.calls == 0 and x.grad is not None
    cache.detach()
    cache.detach()
    assert "forward_blocks" not in vars(model)
    assert model.forward_blocks == original


def test_constructor_errors_name_the_problem():
    model = _tiny_dit()
    with pytest.raises(ValueError, match="threshold"):
        FirstBlockCache(model, threshold=-0.1)
    with pytest.raises(ValueError, match="warmup"):
        FirstBlockCache(model, threshold=0.1, warmup=0)
    with pytest.raises(ValueError, match="blocks"):
        FirstBlockCache(nn.Linear(2, 2), threshold=0.1)

    class NoAdaLN(_TinyDiT):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Identity()])

    with pytest.raises(ValueError, match="adaLN_modulation"):
        TeaCache(NoAdaLN(), threshold=0.1)


def test_caches_speed_up_sampling_by_skipping_calls():
    model = _stdit()
    reference = _sample(model, steps=8)
    with FirstBlockCache(model, threshold=float("inf")) as cache:
        approx = _sample(model, steps=8)
    assert (cache.stats.computed, cache.stats.skipped) == (1, 7)
    assert approx.shape == reference.shape and not torch.equal(approx, reference)


@pytest.mark.parametrize("policy", [FirstBlockCache, TeaCache])
def test_caches_wrap_the_facebookresearch_style_dit(policy):
    from avblocks.dit.dit import DiT

    torch.manual_seed(0)
    model = _randomise(DiT(input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=3,
                           num_heads=2, num_classes=3, learn_sigma=False))
    x, y = torch.randn(2, 2, 8, 8), torch.tensor([0, 1])
    with torch.no_grad():
        reference = [model(x * s, torch.tensor([500.0, 500.0]) * s, y) for s in (1.0, 0.9)]
        with policy(model, threshold=0.0) as cache:
            exact = [model(x * s, torch.tensor([500.0, 500.0]) * s, y) for s in (1.0, 0.9)]
        with policy(model, threshold=float("inf")):
            skipped = [model(x * s, torch.tensor([500.0, 500.0]) * s, y) for s in (1.0, 0.9)]
    assert cache.stats.computed == 2
    assert all(torch.equal(a, b) for a, b in zip(exact, reference, strict=True))
    assert torch.equal(skipped[0], reference[0]) and not torch.equal(skipped[1], reference[1])
