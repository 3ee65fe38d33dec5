"""Low-rank adapters (LoRA) for the frozen linear layers of an image DiT (AV-DiT's audio branch).

- :class:`LoRALinear` / :func:`add_lora` / :func:`merge_lora` / :func:`unmerge_lora`:
  ``y = W x + b + (alpha / rank) * B A x`` with ``B`` zero, so a layer with a fresh adapter
  computes exactly what the frozen layer computes. The wrapped layer keeps the frozen
  ``weight`` / ``bias`` *under its own name* (the same Parameter objects, no copy), so the
  backbone's state-dict keys do not change (``blocks.0.attn.qkv.weight`` stays) and an
  original checkpoint still loads; the adapter adds ``...qkv.lora_A`` / ``...qkv.lora_B``.
- :func:`lora_disabled`: run a backbone shared by two branches without its LoRA updates.

:class:`LoRALinear` freezes the layer it wraps itself (LoRA's point), so its new ``lora_A``
/ ``lora_B`` are what :func:`avblocks.dit.adapter_io.adapter_state_dict` keeps.
"""

import contextlib
import fnmatch
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from avblocks.config import check_int
from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "LoRALinear",
    "add_lora",
    "merge_lora",
    "unmerge_lora",
    "lora_disabled",
]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``W x + b + s * B (A x)``.

    ``s = alpha / rank``. ``A`` (``rank x in``) is initialised as ``nn.Linear`` initialises a
    weight (kaiming-uniform, ``a = sqrt(5)``), ``B`` (``out x rank``) zero, so the layer starts
    exactly as ``base``. ``weight`` and ``bias`` *are* ``base``'s Parameters (shared, not
    copied) and are set to ``requires_grad=False``; state-dict keys are ``weight``, ``bias``,
    ``lora_A``, ``lora_B``.

    :meth:`merge` adds ``s * B A`` into ``weight`` (one Linear at inference), :meth:`unmerge`
    subtracts it again (exact up to float rounding). ``enabled = False`` (see
    :func:`lora_disabled`) computes the base layer alone, merged or not: a backbone shared by
    two branches can run one branch with LoRA and the other without.

    Args:
        base: the Linear to adapt.
        rank: rank of the update.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, *, rank: int = 4, alpha: float = 4.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        check_int("rank", rank)
        if not alpha > 0:
            raise ValueError(f"alpha ({alpha}) must be > 0")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.scaling = rank, float(alpha), float(alpha) / rank
        self.register_parameter("weight", base.weight)
        self.register_parameter("bias", base.bias)
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(False)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False
        self.enabled = True

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}")

    def delta_weight(self) -> Tensor:
        """The update ``s * B A`` (``out x in``), computed in float32 at least."""
        work = torch.promote_types(self.lora_B.dtype, torch.float32)
        return (self.lora_B.to(work) @ self.lora_A.to(work)) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``weight``; the forward is then one Linear. Idempotent."""
        if not self.merged:
            self.weight.copy_(self.weight.to(torch.float32) + self.delta_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of ``weight``. Idempotent."""
        if self.merged:
            self.weight.copy_(self.weight.to(torch.float32) - self.delta_weight())
            self.merged = False

    @shapecheck
    def forward(self, x: Float[Tensor, "*batch din"]) -> Float[Tensor, "*batch dout"]:
        out = F.linear(x, self.weight, self.bias)
        if self.merged == self.enabled:  # merged and on, or unmerged and off: W is right
            return out
        delta = F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return out + delta if self.enabled else out - delta


def _lora_layers(module: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, LoRALinear)]


def add_lora(
    module: nn.Module, targets: Sequence[str], *, rank: int = 4, alpha: float = 4.0
) -> list[str]:
    """Replace the ``nn.Linear`` layers of ``module`` whose names match ``targets`` by
    :class:`LoRALinear`; returns the replaced names in module order.

    ``targets`` are :mod:`fnmatch` patterns over ``named_modules()`` names (``*`` also
    matches dots): ``"blocks.*.attn.qkv"``, ``"blocks.*.mlp.fc?"``, ``"blocks.*"`` (every
    Linear under ``blocks``). Only ``nn.Linear`` layers are candidates, so a broad pattern
    picks the Linears under it; layers already wrapped are not matched again. A pattern
    that matches no candidate raises ``ValueError`` naming it (a typo must not silently
    train nothing).
    """
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise ValueError("add_lora needs at least one target pattern")
    candidates = [(n, m) for n, m in module.named_modules() if n and type(m) is nn.Linear]
    names = [n for n, _ in candidates]
    unmatched = [p for p in targets if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        examples = names[:6]
        raise ValueError(
            f"LoRA target patterns {unmatched} matched no nn.Linear of {type(module).__name__} "
            f"(Linear layers are named like {examples}; layers already wrapped by LoRA are "
            "not matched again)"
        )
    replaced = []
    for name, linear in candidates:
        if any(fnmatch.fnmatchcase(name, p) for p in targets):
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name)
            setattr(parent, child, LoRALinear(linear, rank=rank, alpha=alpha))
            replaced.append(name)
    return replaced


def merge_lora(module: nn.Module) -> list[str]:
    """:meth:`LoRALinear.merge` every LoRA layer of ``module``; returns their names."""
    layers = _lora_layers(module)
    for _, layer in layers:
        layer.merge()
    return [n for n, _ in layers]


def unmerge_lora(module: nn.Module) -> list[str]:
    """:meth:`LoRALinear.unmerge` every LoRA layer of ``module``; returns their names."""
    layers = _lora_layers(module)
    for _, layer in layers:
        layer.unmerge()
    return [n for n, _ in layers]


@contextlib.contextmanager
def lora_disabled(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every LoRA layer of ``module`` computes its base layer alone.

    For AV-DiT's shared backbone: the audio branch runs with LoRA, the video branch in
    ``with lora_disabled(dit): ...`` sees the frozen weights. Restores the previous flags.
    """
    layers = [layer for _, layer in _lora_layers(module)]
    before = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield module
    finally:
        for layer, flag in zip(layers, before, strict=True):
            layer.enabled = flag
