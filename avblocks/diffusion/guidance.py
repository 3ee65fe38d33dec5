"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a conditional model.

``guided = uncond + scale * (cond - uncond)``, where ``cond = model(x, t, **model_kwargs)`` and
``uncond`` is the same model with the null condition. Choices:

- Both branches run in ONE forward on a doubled batch (conditional half first); tensor
  keyword arguments are concatenated along dim 0, non-tensor ones must be equal in both
  branches. At ``scale == 1`` only the conditional branch runs (no extra compute), at
  ``scale == 0`` only the unconditional one.
- The null condition is given by ``uncond_kwargs`` (key -> tensor broadcastable to the
  conditional value, or a number filled into a tensor like it), or for the usual class label
  by ``null_label`` (the label embedder's "no class" index, e.g. ``num_classes`` in DiT's
  ``LabelEmbedder``) for the keyword ``label_key`` (default ``"y"``). Label dropout during
  training is the model's business.
- ``scale`` is a number, or a ``b`` / ``b t`` tensor (per sample or per frame, e.g. a
  different scale for the video and audio planes), broadcast along ``frame_dim``.
- The guidance applies to the whole model output (velocity, epsilon or v: all are affine in
  the model's score estimate); a model whose output also carries learned variances must be
  split before wrapping.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from avblocks.diffusion.timesteps import broadcast_timesteps

__all__ = ["ClassifierFreeGuidance"]


class ClassifierFreeGuidance(nn.Module):
    """Turn a conditional ``model(x, t, **model_kwargs)`` into a guided one (same signature).

    Args:
        model: the conditional model.
        scale: guidance scale (1: conditional only); a number or a ``b`` / ``b t`` tensor.
        uncond_kwargs: keyword arguments replaced in the unconditional branch.
        null_label: shortcut for ``uncond_kwargs={label_key: null_label}``.
        label_key: the keyword argument that carries the class label.
        frame_dim: the data axis indexed by a per-frame ``b t`` scale (default 2).
    """

    def __init__(
        self,
        model: nn.Module | Callable,
        *,
        scale: float | Tensor = 1.0,
        uncond_kwargs: dict | None = None,
        null_label: int | None = None,
        label_key: str = "y",
        frame_dim: int = 2,
    ) -> None:
        super().__init__()
        uncond = dict(uncond_kwargs or {})
        if null_label is not None:
            if label_key in uncond:
                raise ValueError(
                    f"null_label ({null_label}) and uncond_kwargs[{label_key!r}] both given"
                )
            uncond[label_key] = null_label
        if not uncond:
            raise ValueError("give the null condition: `null_label` or `uncond_kwargs`")
        self.model = model
        self.scale = scale
        self.uncond_kwargs = uncond
        self.frame_dim = frame_dim

    def extra_repr(self) -> str:
        return f"scale={self.scale}, uncond_keys={sorted(self.uncond_kwargs)}"

    def forward(self, x: Tensor, t: Tensor, **model_kwargs) -> Tensor:
        scale = self.scale
        if not isinstance(scale, Tensor) and scale == 1:
            return self.model(x, t, **model_kwargs)
        null_kwargs = self.null_kwargs(model_kwargs)
        if not isinstance(scale, Tensor) and scale == 0:
            return self.model(x, t, **null_kwargs)
        both = {k: _cat(k, model_kwargs[k], null_kwargs[k]) for k in model_kwargs}
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), **both)
        cond, uncond = out.chunk(2)
        if isinstance(scale, Tensor):
            scale = broadcast_timesteps(scale.to(cond.device), cond, self.frame_dim).to(cond.dtype)
        return uncond + scale * (cond - uncond)

    def null_kwargs(self, model_kwargs: dict) -> dict:
        """The unconditional branch's keyword arguments."""
        null = dict(model_kwargs)
        for key, value in self.uncond_kwargs.items():
            if key not in model_kwargs:
                raise ValueError(
                    f"uncond key {key!r} is not among the model kwargs {sorted(model_kwargs)}"
                )
            cond_value = model_kwargs[key]
            if isinstance(cond_value, Tensor) and isinstance(value, (bool, int, float)):
                null[key] = torch.full_like(cond_value, value)
            elif isinstance(cond_value, Tensor) and isinstance(value, Tensor):
                null[key] = value.to(cond_value.device, cond_value.dtype).expand_as(cond_value)
            else:
                null[key] = value
        return null


def _cat(key: str, cond, uncond):
    """Concatenate a kwarg of the two branches along the batch (equal non-tensors pass as is)."""
    if isinstance(cond, Tensor) and isinstance(uncond, Tensor):
        return torch.cat([cond, uncond])
    same = not isinstance(cond, Tensor) and not isinstance(uncond, Tensor) and cond == uncond
    if not same:
        raise ValueError(
            f"model kwarg {key!r} cannot be batched across the two branches "
            f"(cond {type(cond).__name__}, uncond {type(uncond).__name__}); use tensors"
        )
    return cond
