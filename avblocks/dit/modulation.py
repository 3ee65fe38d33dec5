"""adaLN-Zero: conditioning vectors -> shift / scale / gate, broadcast to tokens as views.

DiT's adaptive layer norm: ``modulate(norm(x), shift, scale) = norm(x) * (1 + scale) + shift``
and a residual branch ``x + gate * branch(...)``, where ``(shift, scale, gate, ...)`` are
``SiLU -> Linear`` of the conditioning vector ``c``. The Linear is zero-initialised (the
"-Zero"), so every gate starts at 0 and a fresh block is the identity.

Conditioning may be per sample (``b d``) or per frame (``b t d``: ProAV-DiT's per-plane
timesteps, READ's per-frame noise levels). The Linear runs on those rows only, never per
token: :func:`to_tokens` turns a ``b d`` / ``b t d`` vector into a broadcastable view
(``unsqueeze``) of the token grid ``b n d`` / ``b t n d``, so the cost of conditioning does
not grow with the number of tokens.
"""

import torch
from torch import nn

from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["modulate", "to_tokens", "AdaLNZero"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``x * (1 + scale) + shift`` (DiT); ``shift``/``scale`` already broadcastable to ``x``."""
    return x * (1 + scale) + shift


def to_tokens(v: Tensor, tokens: Tensor) -> Tensor:
    """View of a conditioning vector that broadcasts over the tokens of ``tokens``.

    - tokens ``b n d``: ``v`` must be ``b d``; returns ``b 1 d``;
    - tokens ``b t n d``: ``v`` may be ``b d`` (same for every frame; returns ``b 1 1 d``) or
      ``b t d`` (one per frame; returns ``b t 1 d``).

    Only ``unsqueeze`` (no copy); raises ``ValueError`` naming the shapes otherwise.
    """
    if v.shape[0] != tokens.shape[0] or v.shape[-1] != tokens.shape[-1]:
        raise ValueError(
            f"conditioning {tuple(v.shape)} does not match tokens {tuple(tokens.shape)} "
            "in batch (first) or width (last) axis"
        )
    if tokens.ndim == 3 and v.ndim == 2:
        return v.unsqueeze(1)
    if tokens.ndim == 4 and v.ndim == 2:
        return v[:, None, None, :]
    if tokens.ndim == 4 and v.ndim == 3:
        if v.shape[1] != tokens.shape[1]:
            raise ValueError(
                f"per-frame conditioning has {v.shape[1]} frames but tokens {tuple(tokens.shape)} "
                f"(b t n d) have {tokens.shape[1]}"
            )
        return v.unsqueeze(2)
    raise ValueError(
        f"conditioning of shape {tuple(v.shape)} cannot modulate tokens of shape "
        f"{tuple(tokens.shape)}: expected b d with b n d tokens, or b d / b t d with b t n d"
    )


class AdaLNZero(nn.Sequential):
    """``SiLU -> Linear(cond_size, num_vectors * hidden_size)``, zero-initialised, split in chunks.

    A ``nn.Sequential`` so that its Linear is parameter ``1`` (DiT's ``adaLN_modulation.1``).
    ``forward(c)`` with ``c`` of shape ``b d`` or ``b t d`` returns ``num_vectors`` tensors of
    the same leading shape and width ``hidden_size``, in the order the owning block documents
    (DiT: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp).

    Args:
        hidden_size: width of each output vector (the token width).
        num_vectors: how many vectors (3 per modulated branch).
        cond_size: width of the conditioning vector (default ``hidden_size``).
    """

    def __init__(self, *, hidden_size: int, num_vectors: int, cond_size: int | None = None) -> None:
        cond_size = hidden_size if cond_size is None else cond_size
        if hidden_size < 1 or cond_size < 1:
            raise ValueError(f"hidden_size ({hidden_size}) and cond_size ({cond_size}) must be >= 1")
        if num_vectors < 1:
            raise ValueError(f"num_vectors ({num_vectors}) must be >= 1")
        super().__init__(nn.SiLU(), nn.Linear(cond_size, num_vectors * hidden_size))
        self.hidden_size = hidden_size
        self.num_vectors = num_vectors
        nn.init.zeros_(self[1].weight)
        nn.init.zeros_(self[1].bias)

    @shapecheck
    def forward(self, c: Float[Tensor, "b *frames dc"]) -> tuple[Tensor, ...]:
        out = self[1](self[0](c))
        return torch.chunk(out, self.num_vectors, dim=-1)
