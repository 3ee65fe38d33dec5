"""Regional compile, bf16 autocast and block checkpointing (avblocks.dit.compile)."""

import pytest
import torch
from torch import nn

from avblocks.dit.cache import FirstBlockCache
from avblocks.dit.compile import (
    bf16_autocast,
    checkpoint_blocks,
    compile_blocks,
    repeated_blocks,
    uncheckpoint_blocks,
)
from avblocks.dit.stdit import STDiT
from avblocks.latent.volume import VolumeDecoder


def _stdit(depth: int = 3) -> STDiT:
    torch.manual_seed(0)
    model = STDiT(in_channels=2, side=8, frames=6, patch=2, hidden_size=32, depth=depth,
                  num_heads=2, num_classes=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer" in name:
                p.normal_(0, 0.05)
    return model.eval()


def _inputs(b: int = 2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 2, 6, 8, 8, generator=g), torch.rand(b, 6, generator=g), torch.arange(b)


def test_repeated_blocks_finds_the_block_stacks_only():
    model = _stdit()
    assert [name for name, _ in repeated_blocks(model)] == ["blocks.0", "blocks.1", "blocks.2"]
    decoder = VolumeDecoder(latent_channels=2, hidden_channels=8, depth=2, groups=2)
    assert [name for name, _ in repeated_blocks(decoder)] == ["blocks.0", "blocks.1"]
    with pytest.raises(ValueError, match="not a ModuleList"):
        repeated_blocks(model, ["final_layer"])
    with pytest.raises(ValueError, match="no repeated block stack"):
        compile_blocks(nn.Linear(2, 2))


@pytest.mark.parametrize(
    "backend",
    [
        # Dynamo only (fullgraph tracing, no graph break, no recompile): fast, always run.
        "eager",
        # Inductor code generation (C++ on CPU): about a minute on a shared core.
        pytest.param("inductor", marks=pytest.mark.slow),
    ],
)
def test_compiled_blocks_agree_with_eager_without_recompiling(backend):
    torch._dynamo.reset()
    model = _stdit()
    x, t, y = _inputs()
    keys = list(model.state_dict())
    with torch.no_grad():
        eager = model(x, t, y)
        compile_blocks(model, backend=backend)
        compiled = model(x, t, y)
        with torch._dynamo.config.patch(error_on_recompile=True):
            again = model(x, t * 0.5, y)  # same shapes, new values: no recompile
    assert list(model.state_dict()) == keys  # compiled in place: keys unchanged
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, _stdit()(x, t * 0.5, y).detach(), rtol=1e-4, atol=1e-5)
    # the step cache composes: it calls the (compiled) blocks
    with torch.no_grad(), FirstBlockCache(model, threshold=0.0):
        cached = model(x, t, y)
    torch.testing.assert_close(cached, eager, rtol=1e-4, atol=1e-5)


def test_regional_compile_refuses_inductor_freezing(monkeypatch):
    import torch._inductor.config as inductor_config

    model = _stdit()
    monkeypatch.setattr(inductor_config, "freezing", True)
    with pytest.raises(ValueError, match="freezing"):
        compile_blocks(model)
    assert all(b._compiled_call_impl is None for _, b in repeated_blocks(model))  # nothing half-done
    monkeypatch.setattr(inductor_config, "freezing", False)
    compile_blocks(model)  # the same model compiles once freezing is off
    assert all(b._compiled_call_impl is not None for _, b in repeated_blocks(model))


def test_bf16_autocast_runs_blocks_in_bfloat16_close_to_float32():
    model = _stdit()
    x, t, y = _inputs()
    seen = []
    hook = model.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad():
        ref = model(x, t, y)
        with bf16_autocast("cpu"):
            low = model(x, t, y)
        with bf16_autocast("cpu", enabled=False):
            off = model(x, t, y)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16, torch.float32]
    assert torch.equal(off, ref)
    err = (low.float() - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05


def test_checkpoint_blocks_gives_identical_outputs_and_gradients():
    decoder = VolumeDecoder(latent_channels=2, hidden_channels=8, depth=2, groups=2)
    with torch.no_grad():
        for p in decoder.parameters():
            p.normal_(0, 0.2)
    z = torch.randn(1, 2, 3, 4, 4)

    def grads():
        decoder.zero_grad()
        out = decoder(z)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in decoder.parameters()]

    ref_out, ref_grads = grads()
    assert checkpoint_blocks(decoder) == 2
    assert checkpoint_blocks(decoder) == 2  # idempotent
    calls = []
    hook = decoder.blocks[0].spatial.register_forward_hook(lambda *a: calls.append(1))
    out, got = grads()
    hook.remove()
    assert len(calls) == 2  # forward + recomputation in the backward
    assert torch.equal(out, ref_out)
    for a, b in zip(got, ref_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert uncheckpoint_blocks(decoder) == 2
    assert "forward" not in vars(decoder.blocks[0])
