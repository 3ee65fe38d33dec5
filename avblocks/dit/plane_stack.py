"""Stack the six tri-plane latents of a sounding video into one ``b c 6 s s`` latent, and back.

ProAV-DiT's ST-DiT treats the six 2D latents (three video planes, three audio planes) as
the six "frames" of one 3D latent. The planes generally differ in size (a video ``hw``
plane is ``h x w``, its ``th`` plane ``t x h``, the audio ``hw`` plane ``f x w'``, ...), so
:class:`PlaneStack` puts each on a common square canvas ``s x s``.

Choices (ProAV-DiT publishes no code):

- fixed plane order :data:`PLANE_ORDER`: video ``hw, th, tw``, then audio ``hw, th, tw``
  (audio volumes are ``b c t f w``: its ``hw`` plane is ``f x w``, ``th`` is ``t x f``,
  ``tw`` is ``t x w``). Plain tensors in, plain tensors out; an adapter for ``TriPlane`` /
  ``AVLatent`` objects can sit on top (``video.hw, video.th, video.tw, audio.hw, ...``);
- the side ``s`` is the largest plane dimension, rounded up to a multiple of ``multiple``
  (e.g. the patch size), unless a larger ``side`` is given;
- each plane sits in the **top-left** corner of its canvas (rows ``0..rows-1``, columns
  ``0..cols-1``); the rest is zero. No resampling, so stack -> unstack is bit-exact;
- :attr:`PlaneStack.valid_mask` (``planes s s``, ``True`` on real latent cells) lets the
  diffusion loss ignore the padding; :meth:`PlaneStack.token_mask` gives the same per
  patch token (a token is valid if any of its cells is);
- :meth:`PlaneStack.unstack` returns contiguous crops (copies, not views of the canvas).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from avblocks.latent.planes import PLANE_ORDER
from avblocks.typing import Bool, Float, Tensor, shapecheck

__all__ = ["PLANE_ORDER", "PlaneStack"]



class PlaneStack(nn.Module):
    """Planes ``b c rows_i cols_i`` (in :data:`PLANE_ORDER`) <-> one latent ``b c planes s s``.

    Args:
        shapes: ``(rows, cols)`` of each plane, in order (six for ProAV-DiT; any number >= 1
            is accepted, named ``plane_{i}`` beyond the six).
        channels: channels ``c`` every plane must have.
        side: canvas side ``s`` (default: the largest plane dimension, rounded up to
            ``multiple``); must be at least every plane dimension.
        multiple: the default side is rounded up to a multiple of this (e.g. the patch size).
    """

    def __init__(
        self,
        *,
        shapes: Sequence[tuple[int, int]],
        channels: int,
        side: int | None = None,
        multiple: int = 1,
    ) -> None:
        super().__init__()
        shapes = tuple(tuple(int(v) for v in shape) for shape in shapes)
        if not shapes:
            raise ValueError("shapes is empty: give the (rows, cols) of at least one plane")
        for i, shape in enumerate(shapes):
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"plane {self._name(i)} shape {shape} must be two positive ints")
        if channels < 1:
            raise ValueError(f"channels ({channels}) must be >= 1")
        if multiple < 1:
            raise ValueError(f"multiple ({multiple}) must be >= 1")
        largest = max(max(shape) for shape in shapes)
        if side is None:
            side = -(-largest // multiple) * multiple
        elif side < largest:
            raise ValueError(
                f"side ({side}) is smaller than the largest plane dimension ({largest}) "
                f"of shapes {shapes}"
            )
        self.shapes = shapes
        self.channels = channels
        self.side = side
        mask = torch.zeros(len(shapes), side, side, dtype=torch.bool)
        for i, (rows, cols) in enumerate(shapes):
            mask[i, :rows, :cols] = True
        self.register_buffer("valid_mask", mask, persistent=False)
        #: ``planes s s`` bool: True on real latent cells, False on the canvas padding.
        self.valid_mask: Tensor

    @classmethod
    def for_av(
        cls,
        *,
        video_thw: tuple[int, int, int],
        audio_tfw: tuple[int, int, int],
        channels: int,
        side: int | None = None,
        multiple: int = 1,
    ) -> "PlaneStack":
        """The six planes of a video latent ``(t, h, w)`` and an audio latent ``(t, f, w)``."""
        tv, h, w = video_thw
        ta, f, wa = audio_tfw
        shapes = [(h, w), (tv, h), (tv, w), (f, wa), (ta, f), (ta, wa)]
        return cls(shapes=shapes, channels=channels, side=side, multiple=multiple)

    @property
    def num_planes(self) -> int:
        return len(self.shapes)

    @staticmethod
    def _name(i: int) -> str:
        return PLANE_ORDER[i] if i < len(PLANE_ORDER) else f"plane_{i}"

    def _check(self, planes: Sequence[Tensor]) -> None:
        if len(planes) != self.num_planes:
            raise ValueError(f"expected {self.num_planes} planes {PLANE_ORDER[:self.num_planes]}, "
                             f"got {len(planes)}")
        batch = planes[0].shape[0] if planes[0].ndim else None
        for i, (plane, shape) in enumerate(zip(planes, self.shapes, strict=True)):
            name = self._name(i)
            if plane.ndim != 4:
                raise ValueError(f"plane {name} must be b c rows cols, got shape {tuple(plane.shape)}")
            if plane.shape[1] != self.channels:
                raise ValueError(
                    f"plane {name} has {plane.shape[1]} channels, expected {self.channels} "
                    f"(channels of all planes: {[p.shape[1] for p in planes]})"
                )
            if tuple(plane.shape[2:]) != shape:
                raise ValueError(f"plane {name} is {tuple(plane.shape[2:])}, expected {shape}")
            if plane.shape[0] != batch:
                raise ValueError(f"plane {name} has batch {plane.shape[0]}, plane "
                                 f"{self._name(0)} has {batch}")

    @shapecheck
    def stack(self, planes: Sequence[Tensor]) -> Float[Tensor, "b c t s s"]:
        """Zero-pad each plane into the top-left of an ``s x s`` canvas; stack along ``t``."""
        self._check(planes)
        s = self.side
        padded = [F.pad(p, (0, s - p.shape[3], 0, s - p.shape[2])) for p in planes]
        return torch.stack(padded, dim=2)

    @shapecheck
    def unstack(self, latent: Float[Tensor, "b c t s s"]) -> tuple[Tensor, ...]:
        """Crop each plane back out of the stacked latent (contiguous copies)."""
        if tuple(latent.shape[1:]) != (self.channels, self.num_planes, self.side, self.side):
            raise ValueError(
                f"latent {tuple(latent.shape)} does not match b c t s s = "
                f"(b, {self.channels}, {self.num_planes}, {self.side}, {self.side})"
            )
        return tuple(
            latent[:, :, i, :rows, :cols].clone(memory_format=torch.contiguous_format)
            for i, (rows, cols) in enumerate(self.shapes)
        )

    def forward(self, planes: Sequence[Tensor]) -> Tensor:
        """Same as :meth:`stack`."""
        return self.stack(planes)

    def token_mask(self, patch_size: int | tuple[int, int]) -> Bool[Tensor, "t n"]:
        """Validity per patch token (tokens in ``(h w)`` order per plane): any valid cell."""
        p, q = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        if self.side % p or self.side % q:
            raise ValueError(f"side ({self.side}) is not divisible by patch size {(p, q)}")
        cells = rearrange(self.valid_mask, "t (h p) (w q) -> t (h w) (p q)", p=p, q=q)
        return cells.any(dim=-1)
