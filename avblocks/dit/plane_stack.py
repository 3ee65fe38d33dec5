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

from avblocks.dit.plane_layout import PlaneLayout, av_plane_shapes
from avblocks.latent.planes import PLANE_ORDER
from avblocks.typing import Bool, Float, Tensor, shapecheck

__all__ = ["PLANE_ORDER", "PlaneStack"]



class PlaneStack(PlaneLayout):
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
        self._set_planes(shapes, channels)
        shapes = self.shapes
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
        return cls(shapes=av_plane_shapes(video_thw, audio_tfw), channels=channels, side=side, multiple=multiple)

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

    def split(self, latent: Tensor) -> tuple[Tensor, ...]:
        """Same as :meth:`unstack` (the name both layouts share)."""
        return self.unstack(latent)

    def latent_shape(self, batch: int) -> tuple[int, int, int, int, int]:
        return (batch, self.channels, self.num_planes, self.side, self.side)

    def frame_values(self, values: Tensor) -> Tensor:
        """One value per plane (``b planes``) along the latent's frame axis: the planes are
        its frames, so the values as they are."""
        self._check_values(values)
        return values

    def token_mask(self, patch_size: int | tuple[int, int]) -> Bool[Tensor, "t n"]:
        """Validity per patch token (tokens in ``(h w)`` order per plane): any valid cell."""
        p, q = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        if self.side % p or self.side % q:
            raise ValueError(f"side ({self.side}) is not divisible by patch size {(p, q)}")
        cells = rearrange(self.valid_mask, "t (h p) (w q) -> t (h w) (p q)", p=p, q=q)
        return cells.any(dim=-1)
