"""One check shared by the ST-DiT layouts' gradient-checkpointing tests."""

import torch


def assert_checkpointing_changes_nothing(plain, checkpointed, x, t, y, *, seed: int | None = None) -> None:
    """``checkpointed`` (same weights as ``plain``, recomputing its blocks in the backward) gives
    the same output bit for bit and the same gradients of the input and of every parameter, for
    a loss that weighs every output element differently. ``seed``: reseeded before each model's
    forward (the same label dropout in training mode)."""
    outs, grads = [], []
    for model in (plain, checkpointed):
        if seed is not None:
            torch.manual_seed(seed)
        xg = x.clone().requires_grad_(True)
        out = model(xg, t, y)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([xg.grad] + [p.grad for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
