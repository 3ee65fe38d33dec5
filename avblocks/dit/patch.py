"""Patchify / un-patchify of planes ``b c h w`` and volumes ``b c t h w``, and patch embeddings.

Token orders (the library's canonical, row-major / frame-major order):

- planes: ``b c (h p) (w q) -> b (h w) (p q c)``: tokens row by row; the values of one token
  are its patch's pixels row by row, channels innermost. This is the layout of DiT's
  ``unpatchify`` (its final Linear writes ``p*p*c`` values per token in this order), so a
  DiT checkpoint's final layer decodes correctly with :func:`unpatchify2d`;
- volumes: ``b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)``: frame-major (all tokens of
  the first temporal slab, then the next), matching ``avblocks.attention.masks``. For a
  ``b t n d`` grid (ST-DiT) use ``rearrange(tokens, "b (t n) d -> b t n d", t=grid_t)``.

:func:`patchify2d` / :func:`unpatchify2d` (and the 3D pair) are pure rearranges, exact
inverses of each other. :class:`PatchEmbed2d` / :class:`PatchEmbed3d` are the learned
embedding (a strided convolution ``proj``, DiT's ``x_embedder.proj``), initialised as DiT:
xavier-uniform on the flattened kernel, zero bias.
"""

from einops import rearrange
from torch import nn

from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "patchify2d",
    "unpatchify2d",
    "patchify3d",
    "unpatchify3d",
    "PatchEmbed2d",
    "PatchEmbed3d",
]


def _as_tuple(name: str, value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    out = (value,) * n if isinstance(value, int) else tuple(value)
    if len(out) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise ValueError(f"{name} ({value!r}) must be a positive int or {n} positive ints")
    return out


def _check_divisible(sizes: tuple[int, ...], patch: tuple[int, ...], axes: str) -> None:
    for axis, size, p in zip(axes, sizes, patch, strict=True):
        if size % p:
            raise ValueError(
                f"size {size} of axis {axis!r} is not divisible by its patch size {p} "
                f"(sizes {dict(zip(axes, sizes, strict=True))}, patch {patch})"
            )


def _check_tokens(tokens: Tensor, size: tuple[int, ...], patch: tuple[int, ...], axes: str) -> int:
    """Validate ``b n pd`` tokens against an output ``size``; returns the channel count."""
    _check_divisible(size, patch, axes)
    grid = 1
    volume = 1
    for s, p in zip(size, patch, strict=True):
        grid *= s // p
        volume *= p
    if tokens.shape[1] != grid:
        raise ValueError(
            f"{tokens.shape[1]} tokens cannot tile size {size} with patch {patch} "
            f"(needs {grid} tokens)"
        )
    if tokens.shape[2] % volume:
        raise ValueError(
            f"token width {tokens.shape[2]} is not a multiple of the patch volume {volume} "
            f"(patch {patch}): cannot split it into channels"
        )
    return tokens.shape[2] // volume


@shapecheck
def patchify2d(
    x: Float[Tensor, "b c h w"], patch_size: int | tuple[int, int]
) -> Float[Tensor, "b n pd"]:
    """``b c (h p) (w q) -> b (h w) (p q c)``; raises ``ValueError`` if a size is not divisible."""
    p, q = _as_tuple("patch_size", patch_size, 2)
    _check_divisible(tuple(x.shape[2:]), (p, q), "hw")
    return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=q)


@shapecheck
def unpatchify2d(
    tokens: Float[Tensor, "b n pd"],
    patch_size: int | tuple[int, int],
    size: tuple[int, int],
) -> Float[Tensor, "b c h w"]:
    """``b (h w) (p q c) -> b c (h p) (w q)`` for an output of ``size = (height, width)``."""
    p, q = _as_tuple("patch_size", patch_size, 2)
    _check_tokens(tokens, tuple(size), (p, q), "hw")
    return rearrange(tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=size[0] // p, p=p, q=q)


@shapecheck
def patchify3d(
    x: Float[Tensor, "b c t h w"], patch_size: int | tuple[int, int, int]
) -> Float[Tensor, "b n pd"]:
    """``b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)``."""
    pt, ph, pw = _as_tuple("patch_size", patch_size, 3)
    _check_divisible(tuple(x.shape[2:]), (pt, ph, pw), "thw")
    return rearrange(
        x, "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw
    )


@shapecheck
def unpatchify3d(
    tokens: Float[Tensor, "b n pd"],
    patch_size: int | tuple[int, int, int],
    size: tuple[int, int, int],
) -> Float[Tensor, "b c t h w"]:
    """``b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)`` for ``size = (frames, height, width)``."""
    pt, ph, pw = _as_tuple("patch_size", patch_size, 3)
    _check_tokens(tokens, tuple(size), (pt, ph, pw), "thw")
    return rearrange(
        tokens,
        "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
        t=size[0] // pt,
        h=size[1] // ph,
        pt=pt,
        ph=ph,
        pw=pw,
    )


def _init_proj(proj: nn.Module) -> None:
    # DiT: xavier-uniform on the kernel seen as a (out, in * kernel) Linear.
    nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    nn.init.zeros_(proj.bias)


class PatchEmbed2d(nn.Module):
    """Plane ``b c h w`` -> tokens ``b (h/p w/q) d`` by a strided ``Conv2d`` (``proj``).

    Args:
        in_channels: channels ``c``.
        hidden_size: token width ``d``.
        patch_size: ``p`` or ``(p, q)``.
    """

    def __init__(
        self, *, in_channels: int, hidden_size: int, patch_size: int | tuple[int, int] = 2
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_size < 1:
            raise ValueError(f"in_channels ({in_channels}) and hidden_size ({hidden_size}) must be >= 1")
        self.patch_size = _as_tuple("patch_size", patch_size, 2)
        self.proj = nn.Conv2d(in_channels, hidden_size, self.patch_size, stride=self.patch_size)
        _init_proj(self.proj)

    @shapecheck
    def forward(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b n d"]:
        _check_divisible(tuple(x.shape[2:]), self.patch_size, "hw")
        return rearrange(self.proj(x), "b d h w -> b (h w) d")


class PatchEmbed3d(nn.Module):
    """Volume ``b c t h w`` -> tokens ``b (t/pt h/ph w/pw) d`` (frame-major) by a strided ``Conv3d``.

    For ProAV-DiT's stacked planes ``b c 6 s s`` use ``pt = 1`` (planes are never merged).

    Args:
        in_channels: channels ``c``.
        hidden_size: token width ``d``.
        patch_size: ``p`` or ``(pt, ph, pw)``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        hidden_size: int,
        patch_size: int | tuple[int, int, int] = (1, 2, 2),
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_size < 1:
            raise ValueError(f"in_channels ({in_channels}) and hidden_size ({hidden_size}) must be >= 1")
        self.patch_size = _as_tuple("patch_size", patch_size, 3)
        self.proj = nn.Conv3d(in_channels, hidden_size, self.patch_size, stride=self.patch_size)
        _init_proj(self.proj)

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b n d"]:
        _check_divisible(tuple(x.shape[2:]), self.patch_size, "thw")
        return rearrange(self.proj(x), "b d t h w -> b (t h w) d")
