"""Exponential moving average (EMA) of a module's weights, for sampling and checkpoints.

Recurrence, per parameter, at the ``n``-th update (``n = 0, 1, ...``)::

    d_n    = min(decay, (1 + n) / (10 + n))   if warmup else decay
    ema   <- d_n * ema + (1 - d_n) * param

Choices:

- The EMA starts as a copy of the parameters at construction. Buffers (e.g. norm running
  statistics) are not averaged: they are copied from the model at every update.
- The warm-up (as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` and
  diffusers' ``EMAModel``) gives 0.1, 0.18, 0.25, ... and reaches ``decay`` after about
  ``9 / (1 - decay)`` updates, so early weights do not dominate.
- Averages are stored in the parameters' own dtype and device (keep fp32 master weights
  when training in low precision). ``trainable_only=True`` skips parameters with
  ``requires_grad=False`` at construction (e.g. a frozen pretrained DiT), which ``copy_to``
  then leaves untouched.
- ``state_dict()`` holds plain tensors and numbers (``torch.save`` with
  ``weights_only=True`` loading works); ``module_state_dict(model)`` is the model's own
  state dict with the averaged weights in place (save it as the EMA model's safetensors).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """EMA of ``model``'s parameters (buffers copied). See the module doc for the recurrence.

    Args:
        model: the module whose weights are averaged.
        decay: the EMA decay in ``[0, 1]`` (1: frozen at the initial weights).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` at the ``n``-th update.
        trainable_only: average only parameters that require grad at construction.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        decay: float = 0.9999,
        warmup: bool = False,
        trainable_only: bool = False,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay ({decay}) must lie in [0, 1]")
        self.decay = decay
        self.warmup = warmup
        self.trainable_only = trainable_only
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            name: p.detach().clone()
            for name, p in model.named_parameters()
            if p.requires_grad or not trainable_only
        }
        self.buffers: dict[str, Tensor] = {
            name: b.detach().clone() for name, b in model.named_buffers()
        }

    def __repr__(self) -> str:
        return (
            f"EMA(decay={self.decay}, warmup={self.warmup}, num_updates={self.num_updates}, "
            f"tensors={len(self.shadow)})"
        )

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current parameters; copy its buffers."""
        d = self.current_decay()
        params = self._matching(model.named_parameters(), self.shadow, "parameter")
        for name, p in params:
            self.shadow[name].mul_(d).add_(p.detach(), alpha=1 - d)
        for name, b in self._matching(model.named_buffers(), self.buffers, "buffer"):
            self.buffers[name].copy_(b.detach())
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s tracked parameters and its buffers with the EMA ones."""
        for name, p in self._matching(model.named_parameters(), self.shadow, "parameter"):
            p.copy_(self.shadow[name])
        for name, b in self._matching(model.named_buffers(), self.buffers, "buffer"):
            b.copy_(self.buffers[name])

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context manager: ``model`` holds the EMA weights inside, its own weights after."""
        backup = [(t, t.detach().clone()) for _, t in _tensors(model)]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for t, saved in backup:
                    t.copy_(saved)

    def module_state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """``model.state_dict()`` with the EMA parameters and buffers substituted (copies)."""
        state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        for name, t in {**self.shadow, **self.buffers}.items():
            if name in state:
                state[name] = t.detach().clone()
        return state

    def state_dict(self) -> dict:
        """Plain tensors and numbers: decay, warmup, num_updates, shadow, buffers."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
            "buffers": {k: v.clone() for k, v in self.buffers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; tensor names must match the tracked ones."""
        for key in ("shadow", "buffers"):
            mine, theirs = getattr(self, key), state[key]
            if set(mine) != set(theirs):
                missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
                raise ValueError(f"EMA {key} names differ: missing {missing}, unexpected {extra}")
            for name, t in theirs.items():
                if t.shape != mine[name].shape:
                    raise ValueError(
                        f"EMA {key} {name!r} has shape {tuple(t.shape)}, "
                        f"expected {tuple(mine[name].shape)}"
                    )
                mine[name].copy_(t)
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])

    @staticmethod
    def _matching(named, store: dict[str, Tensor], kind: str):
        named = dict(named)
        missing = sorted(set(store) - set(named))
        if missing:
            raise ValueError(f"model lacks the EMA-tracked {kind}s {missing[:5]}")
        for name in store:
            if named[name].shape != store[name].shape:
                raise ValueError(
                    f"{kind} {name!r} has shape {tuple(named[name].shape)}, "
                    f"the EMA has {tuple(store[name].shape)}"
                )
        return [(name, named[name]) for name in store]


def _tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Every parameter and buffer (persistent or not) of ``model``."""
    return [*model.named_parameters(), *model.named_buffers()]
