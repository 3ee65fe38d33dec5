"""Pack the six tri-plane latents of a sounding video into one ``b c L`` latent, and back.

The packed alternative to :class:`~avblocks.dit.plane_stack.PlaneStack`: instead of
zero-padding every plane onto a common square canvas, the planes' cells are laid end to end,
``L = sum(rows_i * cols_i)``, so the latent holds no padding at all whatever the plane shapes
(a 64-frame clip's ``th`` planes are ``64 x 8``, its ``hw`` plane ``8 x 8``: the canvas
would be ``64 x 64``, 82% padding with row tokens).

Choices:

- order: the planes in :data:`~avblocks.latent.planes.PLANE_ORDER`, each flattened
  row-major (``c rows cols -> c (rows cols)``); pack -> unpack is bit-exact;
- the diffusion helpers of :mod:`avblocks.diffusion` index "frames" along axis 2 of the
  data: for a packed latent that axis is the cells. :meth:`PlanePack.frame_values` turns one
  value per plane (``b planes``: per-plane timesteps, the held-clean mask of audio-to-video)
  into one per cell (``b L``, constant within each plane), and
  :meth:`PlanePack.plane_values` reads them back;
- ``valid_mask`` is all True (``L``): the same interface as the canvas's mask,
  which callers multiply noise by, so code that serves both layouts needs no branch.
"""

from collections.abc import Sequence

import torch

from avblocks.dit.plane_layout import PlaneLayout, av_plane_shapes
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["PlanePack"]


class PlanePack(PlaneLayout):
    """Planes ``b c rows_i cols_i`` (in :data:`~avblocks.latent.planes.PLANE_ORDER`) <-> one latent ``b c L``.

    Args:
        shapes: ``(rows, cols)`` of each plane, in order (six for ProAV-DiT; any number >= 1).
        channels: channels ``c`` every plane must have.
    """

    def __init__(self, *, shapes: Sequence[tuple[int, int]], channels: int) -> None:
        super().__init__()
        self._set_planes(shapes, channels)
        self.sizes = tuple(rows * cols for rows, cols in self.shapes)
        self.starts = tuple(sum(self.sizes[:i]) for i in range(len(self.shapes)))
        self.cells = sum(self.sizes)
        self.register_buffer("valid_mask", torch.ones(self.cells, dtype=torch.bool), persistent=False)

    @classmethod
    def for_av(cls, *, video_thw: tuple[int, int, int], audio_tfw: tuple[int, int, int],
               channels: int) -> "PlanePack":
        """The six planes of a video latent ``(t, h, w)`` and an audio latent ``(t, f, w)``."""
        return cls(shapes=av_plane_shapes(video_thw, audio_tfw), channels=channels)

    def latent_shape(self, batch: int) -> tuple[int, int, int]:
        return (batch, self.channels, self.cells)

    @shapecheck
    def pack(self, planes: Sequence[Tensor]) -> Float[Tensor, "b c n"]:
        """Each plane flattened row-major, the planes end to end (``b c L``)."""
        self._check(planes)
        return torch.cat([p.flatten(2) for p in planes], dim=2)

    @shapecheck
    def unpack(self, latent: Float[Tensor, "b c n"]) -> tuple[Tensor, ...]:
        """The planes back (views of ``latent``: ``.clone()`` them to keep them apart)."""
        if tuple(latent.shape[1:]) != (self.channels, self.cells):
            raise ValueError(f"latent {tuple(latent.shape)} does not match b c L = "
                             f"(b, {self.channels}, {self.cells})")
        return tuple(latent[:, :, s:s + n].unflatten(2, shape)
                     for s, n, shape in zip(self.starts, self.sizes, self.shapes, strict=True))

    def forward(self, planes: Sequence[Tensor]) -> Tensor:
        """Same as :meth:`pack`."""
        return self.pack(planes)

    def split(self, latent: Tensor) -> tuple[Tensor, ...]:
        """Same as :meth:`unpack` (the name both layouts share)."""
        return self.unpack(latent)

    def frame_values(self, values: Tensor) -> Tensor:
        """One value per plane (``b planes``) -> one per latent cell (``b L``)."""
        self._check_values(values)
        sizes = torch.tensor(self.sizes, device=values.device)
        return values.repeat_interleave(sizes, dim=1, output_size=self.cells)

    def plane_values(self, values: Tensor) -> Tensor:
        """One value per latent cell (``b L``) -> the value of each plane's first cell (``b planes``)."""
        if values.ndim != 2 or values.shape[1] != self.cells:
            raise ValueError(f"expected b L = (b, {self.cells}) values, got {tuple(values.shape)}")
        return values[:, list(self.starts)]
