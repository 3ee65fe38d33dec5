"""Timestep and class-label embedders of a diffusion transformer, with DiT's parameter names.

Both follow facebookresearch/DiT (Peebles & Xie, 2023) so that an original DiT checkpoint
loads into them by its own keys: ``t_embedder.mlp.0`` / ``t_embedder.mlp.2`` and
``y_embedder.embedding_table``.

Choices beyond DiT (documented because ProAV-DiT and READ rely on them):

- timesteps may be one per sample (``b``) or one per frame / plane (``b t``); the per-frame
  case is the per-sample embedding applied to every entry (the MLP runs on ``b*t`` rows, one
  per frame, never per token), so ``b t`` with equal entries along ``t`` gives the ``b``
  result repeated;
- the sinusoid is computed in float32 (float64 inputs stay float64) whatever the timestep
  dtype (integer steps of DDPM or float times of flow matching), then cast to the MLP's dtype.
"""

import math

import torch
from jaxtyping import Real
from torch import nn

from avblocks.typing import Bool, Float, Int, Tensor, shapecheck

__all__ = ["timestep_embedding", "TimestepEmbedder", "LabelEmbedder"]

# Aliases: a one-word shape string inside an annotation reads as a forward reference to
# pyflakes (F821); as module-level values it does not.
StepsPerSampleOrFrame = Real[Tensor, "b *frames"]
Labels = Int[Tensor, "b"]
DropIds = Int[Tensor, "b"] | Bool[Tensor, "b"]


def timestep_embedding(
    t: Real[Tensor, "*batch"], dim: int, max_period: float = 10000.0
) -> Float[Tensor, "*batch dim"]:
    """Sinusoidal embedding of (possibly fractional) timesteps, DiT/GLIDE convention.

    ``freqs_i = max_period ** (-i / half)`` for ``i < half = dim // 2``; the output is
    ``cat([cos(t * freqs), sin(t * freqs)])`` (cosines first, as DiT), with one zero column
    appended when ``dim`` is odd. Works on any leading shape.
    """
    if dim < 2:
        raise ValueError(f"embedding dim ({dim}) must be >= 2")
    work = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=work) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = t.to(work).unsqueeze(-1) * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timesteps ``b`` (or per frame ``b t``) -> vectors ``b d`` (or ``b t d``).

    ``mlp = Sequential(Linear(frequency_embedding_size, d), SiLU, Linear(d, d))`` on the
    sinusoidal embedding (:func:`timestep_embedding`). Initialisation as DiT: both weights
    normal(std 0.02), biases zero.

    Args:
        hidden_size: output width ``d``.
        frequency_embedding_size: width of the sinusoidal embedding (DiT: 256).
        max_period: the slowest sinusoid's period (DiT: 10000).
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        frequency_embedding_size: int = 256,
        max_period: float = 10000.0,
    ) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size ({hidden_size}) must be >= 1")
        if frequency_embedding_size < 2:
            raise ValueError(
                f"frequency_embedding_size ({frequency_embedding_size}) must be >= 2"
            )
        if max_period <= 0:
            raise ValueError(f"max_period ({max_period}) must be > 0")
        self.hidden_size = hidden_size
        self.frequency_embedding_size = frequency_embedding_size
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        for index in (0, 2):
            nn.init.normal_(self.mlp[index].weight, std=0.02)
            nn.init.zeros_(self.mlp[index].bias)

    @shapecheck
    def forward(self, t: StepsPerSampleOrFrame) -> Float[Tensor, "b *frames d"]:
        freq = timestep_embedding(t, self.frequency_embedding_size, self.max_period)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels ``b`` -> vectors ``b d``, with label dropout for classifier-free guidance.

    The table has ``num_classes + 1`` rows when ``dropout_prob > 0`` (DiT's layout): the
    extra row, index ``num_classes``, is the "null" class that dropped labels are replaced
    by. Dropout happens when training (``train`` argument, default ``self.training``) or
    whenever ``force_drop_ids`` is given (entries equal to 1 / True are dropped, the rest
    kept, as DiT). Initialisation as DiT: normal(std 0.02).

    Args:
        num_classes: number of real classes.
        hidden_size: output width ``d``.
        dropout_prob: probability of replacing a label by the null class during training.
    """

    def __init__(self, *, num_classes: int, hidden_size: int, dropout_prob: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes ({num_classes}) must be >= 1")
        if hidden_size < 1:
            raise ValueError(f"hidden_size ({hidden_size}) must be >= 1")
        if not 0.0 <= dropout_prob <= 1.0:
            raise ValueError(f"dropout_prob ({dropout_prob}) must be in [0, 1]")
        self.num_classes = num_classes
        self.hidden_size = hidden_size
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        nn.init.normal_(self.embedding_table.weight, std=0.02)

    @property
    def null_class(self) -> int:
        """Index of the null (unconditional) class: ``num_classes``."""
        return self.num_classes

    @shapecheck
    def drop_labels(
        self,
        labels: Labels,
        force_drop_ids: DropIds | None = None,
    ) -> Labels:
        """Replace dropped labels by :attr:`null_class` (random, or where ``force_drop_ids == 1``)."""
        if self.dropout_prob <= 0:
            raise ValueError(
                "label dropout needs a null class, but dropout_prob is 0 "
                f"(table has only the {self.num_classes} real classes)"
            )
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.null_class), labels)

    @shapecheck
    def forward(
        self,
        labels: Labels,
        train: bool | None = None,
        force_drop_ids: DropIds | None = None,
    ) -> Float[Tensor, "b d"]:
        train = self.training if train is None else train
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.drop_labels(labels, force_drop_ids)
        return self.embedding_table(labels)
