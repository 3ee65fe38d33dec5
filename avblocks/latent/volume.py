"""Volume encoder/decoder: video ``b c t h w`` (or video-like audio ``b c t f w``) <-> 3D latent.

The first stage of each MDSA stream (ProAV-DiT): a clip becomes a 3D latent ``b z t' h' w'``
that the tri-plane projector then summarises. The architecture is our choice (the paper
gives no code) and is convolutional so that it is fast on CPU and takes any size that the
patch divides:

encoder
    1. patch stem: ``Conv3d(in, hidden, kernel=patch, stride=patch)`` - non-overlapping 3D
       patches, down-sampling each axis by its own factor (``(1, 4, 4)`` keeps every frame,
       ``(2, 4, 4)`` also halves time);
    2. ``depth`` :class:`FactorisedResBlock3d`: ``x + T(act(norm(S(act(norm(x))))))`` with ``S``
       a spatial ``(1, 3, 3)`` conv and ``T`` a temporal ``(3, 1, 1)`` conv (zero padding,
       "same" size), per-frame GroupNorm + SiLU; ``T`` is zero-initialised so each block starts as the
       identity. Factorising costs ``9 + 3`` taps per channel pair instead of ``27``;
    3. output: per-frame GroupNorm, SiLU, ``Conv3d 1x1x1`` to ``latent_channels``.

decoder (mirror)
    1. ``Conv3d 1x1x1`` from ``latent_channels`` to ``hidden``;
    2. ``depth`` :class:`FactorisedResBlock3d`;
    3. per-frame GroupNorm, SiLU, ``Conv3d 1x1x1`` to ``out * pt * ph * pw`` values per latent voxel,
       then a pixel-shuffle un-patch ``b (c pt ph pw) t h w -> b c (t pt) (h ph) (w pw)``
       (the same map as a ``ConvTranspose3d`` with kernel = stride = patch).

So the decoder returns exactly ``(t' pt, h' ph, w' pw)``: the input size for every size the
encoder accepts. The encoder raises a ``ValueError`` naming the axis, its size and the patch
when a size is not a multiple of the patch (no silent cropping or padding).

Every layer is time-local: the norms are :class:`FrameGroupNorm` (statistics per frame, never
across time), so the only temporal mixing is the ``(3, 1, 1)`` convs, one frame each way per
block. A plain GroupNorm over ``c t h w`` would let every frame's features depend on the whole
clip: that breaks the MDSA's cross-modal locality (a group's latent would move when audio far
away changes) and makes chunked decoding of long clips differ from decoding them whole.

For audio, use ``in_channels=1`` and ``axis_names=("t", "f", "w")`` so errors name ``f``.
"""

import math
from dataclasses import dataclass

from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from avblocks.saveload import SaveLoadMixin
from avblocks.typing import shapecheck

__all__ = [
    "FactorisedResBlock3d",
    "FrameGroupNorm",
    "VolumeEncoder",
    "VolumeEncoderConfig",
    "VolumeDecoder",
    "VolumeDecoderConfig",
]


def _check_common(
    *, latent_channels: int, hidden_channels: int, patch: tuple[int, ...], depth: int, groups: int
) -> None:
    if len(patch) != 3 or any(p < 1 for p in patch):
        raise ValueError(f"patch ({patch}) must be three positive ints (t, h, w)")
    if latent_channels < 1 or hidden_channels < 1:
        raise ValueError(
            f"latent_channels ({latent_channels}) and hidden_channels ({hidden_channels}) "
            "must be >= 1"
        )
    if depth < 0:
        raise ValueError(f"depth ({depth}) must be >= 0")
    if groups < 1 or hidden_channels % groups:
        raise ValueError(f"groups ({groups}) must divide hidden_channels ({hidden_channels})")


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm of ``b c t h w`` with statistics taken per frame (over a group's ``c h w``)."""

    def forward(self, x: Tensor) -> Tensor:
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        normed = nn.functional.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return rearrange(normed, "(b t) c h w -> b c t h w", t=x.shape[2])


class FactorisedResBlock3d(nn.Module):
    """``x + T(SiLU(GN(S(SiLU(GN(x))))))``: spatial ``(1,3,3)`` then temporal ``(3,1,1)`` conv.

    The temporal conv (the residual branch's last layer) is zero-initialised: identity at init.
    """

    def __init__(self, *, channels: int = 64, groups: int = 8):
        super().__init__()
        if groups < 1 or channels % groups:
            raise ValueError(f"groups ({groups}) must divide channels ({channels})")
        self.norm1 = FrameGroupNorm(groups, channels)
        self.spatial = nn.Conv3d(channels, channels, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.norm2 = FrameGroupNorm(groups, channels)
        self.temporal = nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0))
        self.act = nn.SiLU()
        nn.init.zeros_(self.temporal.weight)
        nn.init.zeros_(self.temporal.bias)

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b c t h w"]:
        y = self.spatial(self.act(self.norm1(x)))
        return x + self.temporal(self.act(self.norm2(y)))


@dataclass
class VolumeEncoderConfig:
    in_channels: int = 3
    latent_channels: int = 8
    hidden_channels: int = 64
    patch: tuple[int, int, int] = (1, 4, 4)
    depth: int = 2
    groups: int = 8
    axis_names: tuple[str, str, str] = ("t", "h", "w")


class VolumeEncoder(SaveLoadMixin, nn.Module):
    """Volume ``b c t h w`` -> latent ``b z t' h' w'`` with ``t' = t / pt`` etc.

    See the module docstring for the layers. ``axis_names`` only changes error messages
    (``("t", "f", "w")`` for video-like audio).
    """

    config_class = VolumeEncoderConfig

    def __init__(
        self,
        *,
        in_channels: int = 3,
        latent_channels: int = 8,
        hidden_channels: int = 64,
        patch: tuple[int, int, int] = (1, 4, 4),
        depth: int = 2,
        groups: int = 8,
        axis_names: tuple[str, str, str] = ("t", "h", "w"),
    ):
        super().__init__()
        patch = tuple(patch)  # type: ignore[assignment]
        _check_common(
            latent_channels=latent_channels,
            hidden_channels=hidden_channels,
            patch=patch,
            depth=depth,
            groups=groups,
        )
        if in_channels < 1:
            raise ValueError(f"in_channels ({in_channels}) must be >= 1")
        if len(axis_names) != 3:
            raise ValueError(f"axis_names ({axis_names}) must name three axes")
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.patch, self.axis_names = patch, tuple(axis_names)
        self.stem = nn.Conv3d(in_channels, hidden_channels, kernel_size=patch, stride=patch)
        self.blocks = nn.Sequential(
            *(FactorisedResBlock3d(channels=hidden_channels, groups=groups) for _ in range(depth))
        )
        self.out = nn.Sequential(
            FrameGroupNorm(groups, hidden_channels),
            nn.SiLU(),
            nn.Conv3d(hidden_channels, latent_channels, kernel_size=1),
        )

    def latent_size(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """``(t', h', w')`` for an input of ``(t, h, w)``; ``ValueError`` if a patch does not fit."""
        out = []
        for name, size, p in zip(self.axis_names, (t, h, w), self.patch, strict=True):
            if size < p or size % p:
                raise ValueError(
                    f"axis {name} has size {size}, which is not a positive multiple of its "
                    f"patch {p} (patch {self.patch} over axes {self.axis_names})"
                )
            out.append(size // p)
        return tuple(out)  # type: ignore[return-value]

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b z tl hl wl"]:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input has {x.shape[1]} channels, encoder expects {self.in_channels}")
        self.latent_size(*x.shape[2:])
        return self.out(self.blocks(self.stem(x)))


@dataclass
class VolumeDecoderConfig:
    out_channels: int = 3
    latent_channels: int = 8
    hidden_channels: int = 64
    patch: tuple[int, int, int] = (1, 4, 4)
    depth: int = 2
    groups: int = 8


class VolumeDecoder(SaveLoadMixin, nn.Module):
    """Latent ``b z t' h' w'`` -> volume ``b c (t' pt) (h' ph) (w' pw)`` (mirror of the encoder)."""

    config_class = VolumeDecoderConfig

    def __init__(
        self,
        *,
        out_channels: int = 3,
        latent_channels: int = 8,
        hidden_channels: int = 64,
        patch: tuple[int, int, int] = (1, 4, 4),
        depth: int = 2,
        groups: int = 8,
    ):
        super().__init__()
        patch = tuple(patch)  # type: ignore[assignment]
        _check_common(
            latent_channels=latent_channels,
            hidden_channels=hidden_channels,
            patch=patch,
            depth=depth,
            groups=groups,
        )
        if out_channels < 1:
            raise ValueError(f"out_channels ({out_channels}) must be >= 1")
        self.out_channels, self.latent_channels, self.patch = out_channels, latent_channels, patch
        self.inp = nn.Conv3d(latent_channels, hidden_channels, kernel_size=1)
        self.blocks = nn.Sequential(
            *(FactorisedResBlock3d(channels=hidden_channels, groups=groups) for _ in range(depth))
        )
        self.out = nn.Sequential(
            FrameGroupNorm(groups, hidden_channels),
            nn.SiLU(),
            nn.Conv3d(hidden_channels, out_channels * math.prod(patch), kernel_size=1),
        )

    @shapecheck
    def forward(self, z: Float[Tensor, "b z tl hl wl"]) -> Float[Tensor, "b c t h w"]:
        if z.shape[1] != self.latent_channels:
            raise ValueError(
                f"latent has {z.shape[1]} channels, decoder expects {self.latent_channels}"
            )
        y = self.out(self.blocks(self.inp(z)))
        pt, ph, pw = self.patch
        return rearrange(
            y, "b (c pt ph pw) t h w -> b c (t pt) (h ph) (w pw)", pt=pt, ph=ph, pw=pw
        )
