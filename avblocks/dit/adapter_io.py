"""Train only the adapters: freeze a backbone, count what trains, save and load just that.

What counts as "adapter weights" is decided by ``requires_grad``: freeze the backbone first
(:func:`freeze`), then add adapters (:mod:`avblocks.dit.adapters`, :mod:`avblocks.dit.lora`;
new parameters are trainable). :func:`save_adapters` keeps only the trainable weights on
disk (safetensors, written atomically); :func:`load_adapters` loads them strictly.
"""

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from avblocks.atomic import atomic_path
from avblocks.saveload import CheckpointError, reading
from avblocks.typing import Tensor

__all__ = [
    "freeze",
    "count_parameters",
    "adapter_state_dict",
    "save_adapters",
    "load_adapters",
]


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module``; returns it.

    Does not change train/eval mode (DiT's label dropout follows ``training``; the caller
    decides) and leaves buffers alone.
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` element counts; a parameter shared by several modules counts once."""
    params = list(module.parameters())  # deduplicated by identity
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The trainable parameters of ``model`` (``requires_grad``) by their names, detached.

    Shared parameters appear once, under their first name (``named_parameters`` order).
    """
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def save_adapters(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write :func:`adapter_state_dict` to ``path`` as safetensors, atomically.

    Temporary file + fsync + rename (:func:`avblocks.atomic.atomic_path`): a crash never
    leaves a half-written file. Raises ``ValueError`` if nothing is trainable.
    """
    state = adapter_state_dict(model)
    if not state:
        raise ValueError(
            f"{type(model).__name__} has no trainable parameters: nothing to save as adapters"
        )
    tensors = {k: v.to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "avblocks-adapters"})
    return Path(path)


def load_adapters(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load adapter weights saved by :func:`save_adapters` into ``model``, strictly.

    The expected keys are ``model``'s trainable parameters (build the model, freeze the
    backbone and add the adapters as when saving). A
    :class:`~avblocks.saveload.CheckpointError` names every missing key, unexpected key and
    shape mismatch; nothing is copied then. Dtypes/devices are cast to the model's.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    with reading(path), safe_open(str(path), framework="pt", device="cpu") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    params = dict(model.named_parameters())
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    mismatched = [
        f"{k}: saved {tuple(saved[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(saved))
        if saved[k].shape != expected[k].shape
    ]
    problems = [f"{label} {items}" for label, items in (
        ("missing adapter keys", missing), ("unexpected keys", unexpected),
        ("shape mismatches", mismatched)) if items]
    if problems:
        raise CheckpointError(
            f"cannot load adapters {path} into {type(model).__name__}: " + "; ".join(problems)
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)
    return model
