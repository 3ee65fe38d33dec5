"""Positional encodings: fixed sin-cos tables (1D/2D/3D) and axial rotary (RoPE 1D/2D/3D).

Tokens of a grid are in row-major order: ``(t h w)`` for 3D, ``(h w)`` for 2D, the
library's canonical flattening.

**Sin-cos** (:func:`sincos_embedding`): for one axis with ``c`` channels (``c`` even) and
position ``p``, channel ``i < c/2`` is ``sin(p * omega_i)`` and channel ``c/2 + i`` is
``cos(p * omega_i)``, with ``omega_i = base ** (-i / (c/2))`` (``base = 10000``), as in
MAE/DiT's ``get_1d_sincos_pos_embed_from_grid``. For a grid with ``k`` axes the ``dim``
channels are split **equally** across the axes, in axis order (first ``dim/k`` channels
encode the first axis, ``t`` for a 3D grid), so ``dim`` must be divisible by ``2k``.

MAE/DiT's own 2D table puts the *column* (``w``) coordinate in the first half and the row
(``h``) in the second; :func:`dit_sincos_2d` reproduces that layout exactly (for models
that must match DiT checkpoints' conventions), :func:`sincos_embedding` uses axis order.

**Rotary** (:func:`rotary_angles`, :func:`apply_rotary`): the head dim ``d`` is cut into
consecutive chunks, one per axis (equal chunks by default, or ``split=``; each chunk even).
Within an axis chunk of ``c`` channels, the pair ``(2i, 2i+1)`` is rotated by the angle
``p * base ** (-2i / c)`` (``p`` = the token's coordinate on that axis). Pairs are adjacent
channels (interleaved convention). Rotating ``q`` and ``k`` this way makes ``q . k`` depend
only on the coordinate difference, per axis. Angles and the rotation are computed in
float32; the output has the input's dtype.
"""

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from avblocks.typing import shapecheck

__all__ = [
    "grid_coordinates",
    "sincos_embedding",
    "sincos_1d",
    "sincos_2d",
    "sincos_3d",
    "dit_sincos_2d",
    "rotary_angles",
    "rotary_grid",
    "apply_rotary",
]


def _grid(grid: Sequence[int]) -> tuple[int, ...]:
    grid = tuple(grid)
    if not 1 <= len(grid) <= 3 or any(
        isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid
    ):
        raise ValueError(f"grid ({grid!r}) must be 1 to 3 positive integers")
    return grid


def grid_coordinates(
    grid: Sequence[int], device: torch.device | str | None = None
) -> Float[Tensor, "n a"]:
    """Coordinates of every token of ``grid`` in row-major order, float32, ``n = prod(grid)``."""
    grid = _grid(grid)
    axes = [torch.arange(g, dtype=torch.float32, device=device) for g in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def _sincos_axis(channels: int, pos: Tensor, base: float) -> Tensor:
    half = channels // 2
    omega = base ** (-torch.arange(half, dtype=torch.float64, device=pos.device) / half)
    angle = pos.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def sincos_embedding(
    dim: int, grid: Sequence[int], base: float = 10000.0, device: torch.device | str | None = None
) -> Float[Tensor, "n dim"]:
    """Fixed sin-cos table for a 1D/2D/3D ``grid`` (tokens row-major), float32.

    ``dim`` is split equally across the axes (in axis order); each share is half sin, half
    cos. ``dim`` must be divisible by ``2 * len(grid)``.
    """
    grid = _grid(grid)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or dim % (2 * len(grid)):
        raise ValueError(
            f"dim ({dim!r}) must be a positive multiple of 2 * number of axes "
            f"({2 * len(grid)} for grid {grid}): each axis gets dim / {len(grid)} channels, "
            "half sin and half cos"
        )
    coords = grid_coordinates(grid, device)
    share = dim // len(grid)
    parts = [_sincos_axis(share, coords[:, a], base) for a in range(len(grid))]
    return torch.cat(parts, dim=-1).to(torch.float32)


def sincos_1d(dim: int, length: int, base: float = 10000.0) -> Float[Tensor, "n dim"]:
    """Sin-cos table for ``length`` positions ``0..length-1``."""
    return sincos_embedding(dim, (length,), base)


def sincos_2d(dim: int, height: int, width: int, base: float = 10000.0) -> Float[Tensor, "n dim"]:
    """Sin-cos table for an ``(h, w)`` grid: first ``dim/2`` channels encode ``h``."""
    return sincos_embedding(dim, (height, width), base)


def sincos_3d(
    dim: int, frames: int, height: int, width: int, base: float = 10000.0
) -> Float[Tensor, "n dim"]:
    """Sin-cos table for a ``(t, h, w)`` grid: channel thirds encode ``t``, ``h``, ``w``."""
    return sincos_embedding(dim, (frames, height, width), base)


def dit_sincos_2d(
    dim: int, grid_size: int | tuple[int, int], base: float = 10000.0
) -> Float[Tensor, "n dim"]:
    """The DiT/MAE 2D table for a ``grid_size`` grid (square, or ``(rows, cols)``), in their
    exact channel layout: first half encodes the column (``w``) coordinate, second half the
    row (``h``); tokens in row-major ``(h w)`` order."""
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    table = sincos_embedding(dim, (rows, cols), base)
    half = dim // 2
    return torch.cat([table[:, half:], table[:, :half]], dim=-1)


def _split(head_dim: int, axes: int, split: Sequence[int] | None) -> tuple[int, ...]:
    if split is None:
        if head_dim % (2 * axes):
            raise ValueError(
                f"head_dim ({head_dim}) must be divisible by 2 * number of axes ({2 * axes}) "
                "for an equal rotary split; or pass split= with one even size per axis"
            )
        return (head_dim // axes,) * axes
    split = tuple(split)
    if len(split) != axes or sum(split) != head_dim or any(s < 2 or s % 2 for s in split):
        raise ValueError(
            f"split ({split}) must have one even size >= 2 per axis ({axes}) "
            f"summing to head_dim ({head_dim})"
        )
    return split


def rotary_angles(
    head_dim: int,
    positions: Float[Tensor, "n a"],
    base: float = 10000.0,
    split: Sequence[int] | None = None,
) -> Float[Tensor, "n half"]:
    """Rotation angles (float32, ``half = head_dim / 2``) for tokens at ``positions``.

    ``positions`` holds each token's coordinate on each of the ``a`` axes (need not be a
    grid, may be fractional or shifted). Axis ``j`` owns the head-dim chunk ``split[j]``.
    """
    if positions.ndim != 2 or not 1 <= positions.shape[1] <= 3:
        raise ValueError(f"positions must be (n, axes) with 1-3 axes, got {tuple(positions.shape)}")
    sizes = _split(head_dim, positions.shape[1], split)
    parts = []
    for a, c in enumerate(sizes):
        inv = base ** (-torch.arange(0, c, 2, dtype=torch.float32, device=positions.device) / c)
        parts.append(positions[:, a].to(torch.float32)[:, None] * inv[None, :])
    return torch.cat(parts, dim=-1)


def rotary_grid(
    head_dim: int,
    grid: Sequence[int],
    base: float = 10000.0,
    split: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> Float[Tensor, "n half"]:
    """Rotary angles for every token of a 1D/2D/3D ``grid`` (row-major)."""
    return rotary_angles(head_dim, grid_coordinates(grid, device), base, split)


@shapecheck
def apply_rotary(
    x: Float[Tensor, "b h n d"], freqs: Float[Tensor, "n half"]
) -> Float[Tensor, "b h n d"]:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` by ``freqs[:, i]`` (angles, radians)."""
    if 2 * freqs.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"freqs has {freqs.shape[-1]} angles per token but x has head dim {x.shape[-1]} "
            f"(needs {x.shape[-1] // 2})"
        )
    xf = x.to(torch.float32).unflatten(-1, (-1, 2))
    cos, sin = torch.cos(freqs)[..., None], torch.sin(freqs)[..., None]
    even, odd = xf[..., 0:1], xf[..., 1:2]
    out = torch.cat([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)
