"""What the two plane layouts share: the six tri-plane shapes, their checks and their names.

:class:`~avblocks.dit.plane_stack.PlaneStack` (planes zero-padded onto one square canvas,
``b c 6 s s``) and :class:`~avblocks.dit.plane_pack.PlanePack` (the planes' cells end to end,
``b c L``) both turn planes ``b c rows_i cols_i`` in
:data:`~avblocks.latent.planes.PLANE_ORDER` into one latent and back; a codec holds one of
them and calls ``layout(planes)``, ``layout.split(latent)``, ``layout.latent_shape(b)``,
``layout.frame_values(per_plane)`` and ``layout.valid_mask``.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from avblocks.latent.planes import PLANE_ORDER

__all__ = ["PlaneLayout", "av_plane_shapes"]


def av_plane_shapes(video_thw: tuple[int, int, int], audio_tfw: tuple[int, int, int]) -> list[tuple[int, int]]:
    """The six planes' ``(rows, cols)`` of a video latent ``(t, h, w)`` and an audio latent ``(t, f, w)``."""
    tv, h, w = video_thw
    ta, f, wa = audio_tfw
    return [(h, w), (tv, h), (tv, w), (f, wa), (ta, f), (ta, wa)]


class PlaneLayout(nn.Module):
    """Base of the plane layouts: validated ``shapes`` and ``channels``, plane names, input checks."""

    def _set_planes(self, shapes: Sequence[tuple[int, int]], channels: int) -> None:
        shapes = tuple(tuple(int(v) for v in shape) for shape in shapes)
        if not shapes:
            raise ValueError("shapes is empty: give the (rows, cols) of at least one plane")
        for i, shape in enumerate(shapes):
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"plane {self._name(i)} shape {shape} must be two positive ints")
        if channels < 1:
            raise ValueError(f"channels ({channels}) must be >= 1")
        self.shapes = shapes
        self.channels = channels

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

    def _check_values(self, values: Tensor) -> None:
        if values.ndim != 2 or values.shape[1] != self.num_planes:
            raise ValueError(f"expected b planes = (b, {self.num_planes}) values, got {tuple(values.shape)}")
