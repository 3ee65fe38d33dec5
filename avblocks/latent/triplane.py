"""Tri-plane latents: a volume ``b c t h w`` as three orthogonal planes, and back.

The tri-plane of PVDM (Yu et al., 2023), used by ProAV-DiT's MDSA autoencoder: a 3D latent
``v(t, h, w)`` is summarised by the three planes

    hw(h, w) = pool over t,     th(t, h) = pool over w,     tw(t, w) = pool over h.

For video-like audio the axes are ``t f w`` and everything below holds with ``h`` read as
``f`` (mel rows).

The math of the round trip (mean pooling)
-----------------------------------------
Write ``E_t, E_h, E_w`` for the means over one axis and ``P(v) = (E_t v, E_w v, E_h v)`` for
mean pooling. Every volume splits uniquely (the ANOVA decomposition, orthogonal in the plain
inner product) into

    v = mu + a_t + a_h + a_w + a_th + a_tw + a_hw + a_thw,

each term a function of the named axes only, with zero mean along each of its own axes.
``P`` forgets exactly the three-way term: ``P(v) = 0  iff  v = a_thw``. So the volumes that a
tri-plane can describe are the *plane-separable* ones,

    S = { a(h, w) + b(t, h) + c(t, w) }  (= all terms but a_thw),

and the right inverse is the orthogonal projection onto ``S``::

    Pi(v) = E_t v + E_w v + E_h v - E_hw v - E_tw v - E_th v + E_thw v.

:class:`TriPlaneUnprojector` with ``combine="exact"`` (the default) computes that from the
planes alone (inclusion-exclusion: each one-axis marginal is counted by two planes and the
grand mean by three, so they are subtracted / added back once)::

    U(hw, th, tw)[t, h, w] = hw[h, w] + th[t, h] + tw[t, w]
                             - m_t[t] - m_h[h] - m_w[w] + mu
    m_t = (E_h th + E_w tw) / 2,   m_h = (E_w hw + E_t th) / 2,
    m_w = (E_h hw + E_t tw) / 2,   mu  = (E hw + E th + E tw) / 3.

For planes that come from ``P`` the two estimates of each marginal agree, so:

- ``U(P(v)) = Pi(v)``: ``v`` survives project -> unproject unchanged **iff** ``v`` is
  plane-separable (its three-way ANOVA term is zero), e.g. ``a(h,w) + b(t,h) + c(t,w)``
  for *any* ``a, b, c``; a product such as ``x(t) y(h) z(w)`` with non-constant factors
  does not (its ``a_thw = x' y' z'`` of the centred factors is lost);
- ``U o P`` is idempotent and ``P o U o P = P`` (``U`` is the pseudo-inverse of ``P`` on
  its image).

For planes that do *not* come from one volume (e.g. sampled by a generator), the
symmetric averages above are the choice we made; the output is always in ``S``.

``combine="sum"`` is the plain broadcast-and-sum of the paper's description. Then
``U_sum(P(v)) = Pi(v) + 2 mu + a_t + a_h + a_w``: it counts each one-axis term twice and the
grand mean three times, so ``v`` survives **iff** ``v = a_th + a_tw + a_hw`` (plane-separable
*and* zero grand mean and zero one-axis marginals), and ``U_sum o P`` is not idempotent. A
learned decoder after it can absorb the over-count; the exact form needs no learning.

Attention pooling
-----------------
:class:`TriPlaneProjector` with ``pooling="attention"`` replaces each mean by a learned
attention pool over the collapsed axis (one per plane, PVDM-style): at each position of the
plane, with ``x_i`` (``c`` features) the volume's features along the collapsed axis,
``heads`` heads of width ``d = c / heads``,

    k_i = W_k x_i + b_k           (a Linear c -> c per plane, split into heads)
    a_i = softmax_i(q . k_i / sqrt(d))   per head, with ``q`` a learned (heads, d) query
    out = sum_i a_i x_i            per head, on that head's d channels (values = x itself)

Values are the features themselves (no value/output projection), so the pooled plane is a
per-head convex combination of the volume's features and stays in the volume's feature
space. The query is zero-initialised: at init every weight is uniform and attention pooling
*equals* mean pooling (the round-trip guarantees hold at init and drift as it learns).
Computed with :func:`avblocks.attention.dispatch.attend` (query length 1).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from avblocks.attention.dispatch import attend
from avblocks.latent.planes import PLANES
from avblocks.saveload import SaveLoadMixin
from avblocks.typing import shapecheck

__all__ = [
    "TriPlane",
    "TriPlaneProjector",
    "TriPlaneProjectorConfig",
    "TriPlaneUnprojector",
    "VolumeMix",
    "AttentionPool",
    "triplane_tokens",
    "volume_tokens",
]

Pooling = Literal["mean", "attention"]
Combine = Literal["exact", "sum"]


def triplane_tokens(t: int, h: int, w: int) -> int:
    """Number of latent positions of a tri-plane of a ``t x h x w`` volume: ``hw + th + tw``."""
    for name, n in (("t", t), ("h", h), ("w", w)):
        if n < 1:
            raise ValueError(f"{name} ({n}) must be >= 1")
    return h * w + t * h + t * w


def volume_tokens(t: int, h: int, w: int) -> int:
    """Number of latent positions of the ``t x h x w`` volume itself: ``t h w``."""
    for name, n in (("t", t), ("h", h), ("w", w)):
        if n < 1:
            raise ValueError(f"{name} ({n}) must be >= 1")
    return t * h * w


@dataclass(frozen=True, eq=False)
class TriPlane:
    """The three planes of one volume: ``hw: b c h w``, ``th: b c t h``, ``tw: b c t w``.

    ``__post_init__`` checks that the planes agree on ``b, c, t, h, w`` and raises a
    ``ValueError`` naming the disagreeing sizes. Not a checked dataclass (too slow); the
    check is a few integer comparisons.
    """

    hw: Tensor
    th: Tensor
    tw: Tensor

    def __post_init__(self) -> None:
        for name in PLANES:
            x = getattr(self, name)
            if not isinstance(x, Tensor) or x.ndim != 4:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"TriPlane.{name} must be a 4-d tensor, got {got}")
        (b1, c1, h1, w1), (b2, c2, t2, h2), (b3, c3, t3, w3) = (
            self.hw.shape,
            self.th.shape,
            self.tw.shape,
        )
        checks = [
            ("b", (b1, b2, b3)),
            ("c", (c1, c2, c3)),
            ("t", (t2, t3)),
            ("h", (h1, h2)),
            ("w", (w1, w3)),
        ]
        shapes = f"hw {tuple(self.hw.shape)}, th {tuple(self.th.shape)}, tw {tuple(self.tw.shape)}"
        for axis, sizes in checks:
            if len(set(sizes)) != 1:
                raise ValueError(f"TriPlane planes disagree on {axis} {sizes}: {shapes}")

    @property
    def b(self) -> int:
        return self.hw.shape[0]

    @property
    def c(self) -> int:
        return self.hw.shape[1]

    @property
    def t(self) -> int:
        return self.th.shape[2]

    @property
    def h(self) -> int:
        return self.hw.shape[2]

    @property
    def w(self) -> int:
        return self.hw.shape[3]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"hw": (b, c, h, w), "th": (b, c, t, h), "tw": (b, c, t, w)}``."""
        return {k: tuple(getattr(self, k).shape) for k in PLANES}

    @property
    def num_tokens(self) -> int:
        """Positions per sample over the three planes: ``h w + t h + t w``."""
        return triplane_tokens(self.t, self.h, self.w)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "TriPlane":
        """Apply ``fn`` to each plane; the result is validated again."""
        return TriPlane(hw=fn(self.hw), th=fn(self.th), tw=fn(self.tw))

    def to(self, *args, **kwargs) -> "TriPlane":
        """``Tensor.to`` on each plane (device, dtype, ...)."""
        return self.map(lambda x: x.to(*args, **kwargs))

    def __iter__(self):
        # Unpacking: ``hw, th, tw = planes``.
        return iter((self.hw, self.th, self.tw))


class AttentionPool(nn.Module):
    """Learned attention pooling of ``x: B L c`` over ``L`` (see the module docstring).

    Zero-initialised query: starts as the exact mean over ``L``.
    """

    def __init__(self, *, channels: int = 64, heads: int = 1):
        super().__init__()
        if channels < 1 or heads < 1 or channels % heads:
            raise ValueError(f"channels ({channels}) must be a positive multiple of heads ({heads})")
        self.heads = heads
        self.key = nn.Linear(channels, channels)
        self.query = nn.Parameter(torch.zeros(heads, channels // heads))

    @shapecheck
    def forward(self, x: Float[Tensor, "B L c"]) -> Float[Tensor, "B c"]:
        k = rearrange(self.key(x), "B L (nh d) -> B nh L d", nh=self.heads)
        v = rearrange(x, "B L (nh d) -> B nh L d", nh=self.heads)
        q = self.query.to(x.dtype)[None, :, None, :].expand(x.shape[0], -1, -1, -1)
        out = attend(q.contiguous(), k, v)
        return rearrange(out, "B nh 1 d -> B (nh d)")


@dataclass
class TriPlaneProjectorConfig:
    channels: int = 64
    pooling: Pooling = "mean"
    heads: int = 1


class TriPlaneProjector(SaveLoadMixin, nn.Module):
    """Volume ``b c t h w`` -> :class:`TriPlane` (hw: pool over t, th: over w, tw: over h).

    ``pooling="mean"`` has no parameters; ``pooling="attention"`` learns one
    :class:`AttentionPool` per plane (``channels`` must then match the volume's ``c``).
    """

    config_class = TriPlaneProjectorConfig

    def __init__(self, *, channels: int = 64, pooling: Pooling = "mean", heads: int = 1):
        super().__init__()
        if pooling not in ("mean", "attention"):
            raise ValueError(f"pooling ({pooling!r}) must be 'mean' or 'attention'")
        self.channels, self.pooling = channels, pooling
        if pooling == "attention":
            self.pools = nn.ModuleDict(
                {k: AttentionPool(channels=channels, heads=heads) for k in PLANES}
            )

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t h w"]) -> TriPlane:
        if self.pooling == "mean":
            return TriPlane(hw=x.mean(dim=2), th=x.mean(dim=4), tw=x.mean(dim=3))
        if x.shape[1] != self.channels:
            raise ValueError(f"volume has {x.shape[1]} channels, projector expects {self.channels}")
        b, _, t, h, w = x.shape
        hw = self.pools["hw"](rearrange(x, "b c t h w -> (b h w) t c"))
        th = self.pools["th"](rearrange(x, "b c t h w -> (b t h) w c"))
        tw = self.pools["tw"](rearrange(x, "b c t h w -> (b t w) h c"))
        return TriPlane(
            hw=rearrange(hw, "(b h w) c -> b c h w", b=b, h=h, w=w),
            th=rearrange(th, "(b t h) c -> b c t h", b=b, t=t, h=h),
            tw=rearrange(tw, "(b t w) c -> b c t w", b=b, t=t, w=w),
        )


class VolumeMix(nn.Module):
    """Optional learned mix after unprojection: ``x + Conv3d_1x1x1(x)``, zero-initialised.

    Starts as the identity, so the exact round trip of :class:`TriPlaneUnprojector` holds at
    init; it lets channels interact once the planes are summed.
    """

    def __init__(self, *, channels: int = 64):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels ({channels}) must be >= 1")
        self.proj = nn.Conv3d(channels, channels, kernel_size=1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @shapecheck
    def forward(self, x: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b c t h w"]:
        return x + self.proj(x)


class TriPlaneUnprojector(nn.Module):
    """:class:`TriPlane` -> volume ``b c t h w``: broadcast each plane along its missing axis.

    ``combine="exact"`` (default): broadcast-sum with the inclusion-exclusion correction of
    the module docstring, the exact right inverse of mean pooling on plane-separable volumes.
    ``combine="sum"``: the plain broadcast sum. ``mix`` is an optional module applied to the
    volume afterwards (e.g. :class:`VolumeMix`); ``None`` means none.
    """

    def __init__(self, *, combine: Combine = "exact", mix: nn.Module | None = None):
        super().__init__()
        if combine not in ("exact", "sum"):
            raise ValueError(f"combine ({combine!r}) must be 'exact' or 'sum'")
        self.combine = combine
        self.mix = mix if mix is not None else nn.Identity()

    @shapecheck
    def forward(self, planes: TriPlane) -> Float[Tensor, "b c t h w"]:
        hw, th, tw = planes.hw, planes.th, planes.tw
        x = hw[:, :, None, :, :] + th[:, :, :, :, None] + tw[:, :, :, None, :]
        if self.combine == "exact":
            m_t = 0.5 * (th.mean(dim=3) + tw.mean(dim=3))  # b c t
            m_h = 0.5 * (hw.mean(dim=3) + th.mean(dim=2))  # b c h
            m_w = 0.5 * (hw.mean(dim=2) + tw.mean(dim=2))  # b c w
            mu = (hw.mean(dim=(2, 3)) + th.mean(dim=(2, 3)) + tw.mean(dim=(2, 3))) / 3.0
            x = (
                x
                - m_t[:, :, :, None, None]
                - m_h[:, :, None, :, None]
                - m_w[:, :, None, None, :]
                + mu[:, :, None, None, None]
            )
        return self.mix(x)
