"""Sparse attention for long video token sequences: sliding tiles, and Sparse-VideoGen heads.

Two training-free ways to attend to fewer keys, both reached through the one entry point
:func:`~avblocks.attention.dispatch.attend` (as :class:`~avblocks.attention.dispatch.Backend`
objects, passed as ``backend=`` or installed per layer by a controller below), and both
*exactly* dense attention when their pattern is at full density (tested).

Sliding Tile Attention (STA, Zhang et al. 2025) -- :func:`sliding_tile_attention`,
:class:`SlidingTileBackend` (registered as ``"sliding_tile"``), :class:`SlidingTileAttention`:

- the rule is :class:`~avblocks.attention.masks.SlidingTileMask`'s (tiles of a ``(t, h, w)``
  grid; each query tile sees the ``window`` tiles per axis around it, clamped at borders);
- computed the way STA's kernel does, without a mask: tokens are put in tile order, and for
  each query tile the keys of its ``prod(window)`` key tiles are gathered into one
  contiguous block, so each query tile is one small dense attention (SDPA or any backend),
  batched over tiles. Cost ``N * prod(window) * tile_tokens`` instead of ``N^2``; memory
  holds the gathered keys (``prod(window)`` copies of each key, fewer at borders than the
  full ``N``). Exact: the same scores and softmax over the same keys as the masked dense
  form (tested against the ``math`` backend with the mask);
- :class:`SlidingTileAttention` wires it into ST-DiT: every :class:`~avblocks.dit.blocks.STDiTBlock`'s *spatial*
  attention (within one plane, ``n = (s/p)^2`` tokens on a ``(1, s/p, s/p)`` grid) gets the
  mask; the temporal attention across the six planes stays dense (six keys).

Sparse VideoGen (SVG, Xi et al. 2025) -- :class:`SparseVideoBackend`,
:class:`SparseVideoAttention`, for *full* 3D attention over a ``(t, h, w)`` token grid (a
DiT on video tokens, the full-3D baseline; ST-DiT's attention is already factorised):

- two patterns, both block-diagonal :class:`~avblocks.attention.masks.BlockWindowMask` s
  (``halo = 0``), so each runs exactly as dense attention on folded blocks (no mask):
  *spatial* (default block ``(1, h, w)``: a query sees its own frame) and *temporal*
  (default block ``(t, 1, 1)``: a query sees its own position in every frame);
- online head classification, per call and per head (shared by the batch, i.e. by both
  halves of a guidance batch): ``sample_rows`` video query rows (a fixed random subset,
  seeded, so calls are deterministic and the rows do not alias with the grid) get dense
  attention and each pattern's attention; the head takes the pattern with the lower mean
  squared error against dense on those rows (ties: spatial). SVG profiles this way at every
  step and layer; the rows cost ``sample_rows * N`` scores per head;
- ``extra_tokens``: tokens appended *after* the ``t h w`` video tokens (audio, text,
  registers) are global: every video query also sees them, and their own queries attend
  densely to everything (SVG keeps text tokens dense the same way);
- :class:`SparseVideoAttention` keeps dense attention for the first ``dense_steps`` model
  calls and the first ``dense_layers`` layers (SVG's warm-up: early steps decide the layout
  and early layers are the least sparse), counts steps, and reports how many heads went
  which way.

Controllers: forward pre-/post-hooks (``always_call``) on the chosen attention modules
enter/leave :func:`~avblocks.attention.dispatch.attention_backend` for that module's call
only, and a pre-hook on the model counts its calls (one call = one sampling step, or half a
Heun step). They change no parameter and no module: ``detach()`` removes the hooks; use
them as context managers (``with SparseVideoAttention(model, ...) as sparse:``), which
reset the step count on entry (one sampling run) and detach on exit.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor, nn

from avblocks.attention.dispatch import (
    Backend,
    UnsupportedAttentionError,
    attend,
    attention_backend,
    get_backend,
    register_backend,
)
from avblocks.attention.masks import BlockWindowMask, Mask, SlidingTileMask
from avblocks.typing import Float, shapecheck

__all__ = [
    "sliding_tile_attention",
    "block_diagonal_attention",
    "SlidingTileBackend",
    "SparseVideoBackend",
    "SlidingTileAttention",
    "SparseVideoAttention",
    "SparseStats",
]


def _expand_kv(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Grouped-query heads: repeat each key/value head over its run of query heads."""
    groups = q.shape[1] // k.shape[1]
    if groups == 1:
        return k, v
    return k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)


# ---- sliding tiles ------------------------------------------------------------------------


def _key_tiles(mask: SlidingTileMask, device) -> Tensor:
    """``(num_tiles, prod(window))``: tile-order ids of the key tiles of each query tile."""
    per_axis = []
    for n, w in zip(mask.num_tiles, mask.window, strict=True):
        start = (torch.arange(n, device=device) - (w - 1) // 2).clamp(0, n - w)
        per_axis.append(start[:, None] + torch.arange(w, device=device))  # n x w
    (kt, kh, kw), (_, nh, nw) = per_axis, mask.num_tiles
    ids = (
        (kt[:, None, None, :, None, None] * nh + kh[None, :, None, None, :, None]) * nw
        + kw[None, None, :, None, None, :]
    )
    return ids.reshape(math.prod(mask.num_tiles), math.prod(mask.window))


@shapecheck
def sliding_tile_attention(
    q: Float[Tensor, "b hq n d"],
    k: Float[Tensor, "b hk n d"],
    v: Float[Tensor, "b hk n d"],
    mask: SlidingTileMask,
    scale: float | None = None,
    backend: str | Backend = "sdpa",
) -> Float[Tensor, "b hq n d"]:
    """Attention under ``mask`` computed tile by tile with gathered keys (module docstring).

    ``q, k, v`` are in the mask's token order (``"raster"`` or ``"tiled"``); the output is
    in the same order. ``backend`` runs the per-tile dense attentions.
    """
    if mask.q_len != q.shape[2]:
        raise ValueError(f"{mask!r} is for {mask.q_len} tokens, q has {q.shape[2]}")
    k, v = _expand_kv(q, k, v)
    if mask.is_full:
        return attend(q, k, v, backend=backend, scale=scale)
    if mask.token_order == "raster":
        # raster -> tile order: the permutation of the same mask in "tiled" order
        tiled = SlidingTileMask(mask.grid, mask.tile, mask.window, token_order="tiled")
        perm = tiled.permutation().to(q.device)
        q, k, v = q[:, :, perm], k[:, :, perm], v[:, :, perm]
    tiles, per_tile = math.prod(mask.num_tiles), math.prod(mask.tile)
    ids = _key_tiles(mask, q.device)
    qt = rearrange(q, "b h (T L) d -> b (h T) L d", T=tiles)
    kt = rearrange(k, "b h (T L) d -> b h T L d", T=tiles)[:, :, ids]  # b h T W L d
    vt = rearrange(v, "b h (T L) d -> b h T L d", T=tiles)[:, :, ids]
    kt = rearrange(kt, "b h T W L d -> b (h T) (W L) d")
    vt = rearrange(vt, "b h T W L d -> b (h T) (W L) d")
    out = attend(qt, kt, vt, backend=backend, scale=scale)
    out = rearrange(out, "b (h T) L d -> b h (T L) d", T=tiles, L=per_tile)
    if mask.token_order == "raster":
        out = out[:, :, tiled.inverse_permutation().to(q.device)]
    return out


class SlidingTileBackend(Backend):
    """``attend`` backend for :class:`SlidingTileMask` (gathered tiles, see module doc).

    ``None`` / full masks run dense on ``inner``; any other mask family is refused
    (:class:`UnsupportedAttentionError`), never silently densified.
    """

    name = "sliding_tile"
    constraints = "SlidingTileMask (or None/full); gathered key tiles; any inner backend"

    def __init__(self, inner: str | Backend = "sdpa") -> None:
        self.inner = inner

    def check(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None) -> None:
        super().check(q, k, v, mask)
        if mask is not None and not mask.is_full and not isinstance(mask, SlidingTileMask):
            raise UnsupportedAttentionError(
                f"backend {self.name!r} runs SlidingTileMask only, got {mask!r}"
            )

    def run(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None, scale: float) -> Tensor:
        if mask is None or mask.is_full:
            return attend(q, k, v, backend=self.inner, scale=scale)
        return sliding_tile_attention(q, k, v, mask, scale=scale, backend=self.inner)


register_backend(SlidingTileBackend())


# ---- block-diagonal patterns (SVG) --------------------------------------------------------


def _fold_pattern(grid: tuple[int, int, int], block: tuple[int, int, int]) -> dict:
    (t, h, w), (bt, bh, bw) = grid, block
    return dict(T=t // bt, bt=bt, Y=h // bh, bh=bh, X=w // bw, bw=bw)


@shapecheck
def block_diagonal_attention(
    q: Float[Tensor, "b hq nq d"],
    k: Float[Tensor, "b hk n d"],
    v: Float[Tensor, "b hk n d"],
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    extra_tokens: int = 0,
    scale: float | None = None,
    backend: str | Backend = "sdpa",
) -> Float[Tensor, "b hq nq d"]:
    """Attention of the ``t h w`` video queries ``q`` under ``BlockWindowMask(grid, block)``
    (halo 0: a query sees the keys of its own block), plus the last ``extra_tokens`` keys,
    which every query sees. Runs as dense attention on folded blocks (no mask).

    ``q`` holds the video queries only (``nq = t h w``); ``k, v`` hold the video keys then
    the extra keys (``n = t h w + extra_tokens``).
    """
    n_video = math.prod(grid)
    if q.shape[2] != n_video or k.shape[2] != n_video + extra_tokens:
        raise ValueError(
            f"grid {grid} has {n_video} tokens (+{extra_tokens} extra keys); got q with "
            f"{q.shape[2]} and k with {k.shape[2]} tokens"
        )
    BlockWindowMask(grid, block)  # validates block | grid
    k, v = _expand_kv(q, k, v)
    sizes = _fold_pattern(grid, block)
    fold = "b H (T bt Y bh X bw) d -> (b T Y X) H (bt bh bw) d"
    qf = rearrange(q, fold, **sizes)
    kf = rearrange(k[:, :, :n_video], fold, **sizes)
    vf = rearrange(v[:, :, :n_video], fold, **sizes)
    if extra_tokens:
        folds = qf.shape[0] // q.shape[0]
        kf = torch.cat([kf, k[:, :, n_video:].repeat_interleave(folds, dim=0)], dim=2)
        vf = torch.cat([vf, v[:, :, n_video:].repeat_interleave(folds, dim=0)], dim=2)
    out = attend(qf, kf, vf, backend=backend, scale=scale)
    return rearrange(out, "(b T Y X) H (bt bh bw) d -> b H (T bt Y bh X bw) d", b=q.shape[0], **sizes)


def _pattern_rows(
    scores: Tensor, rows: Tensor, v: Tensor, grid, block, n_video: int
) -> Tensor:
    """Attention output on sampled rows under the block pattern (extra keys allowed)."""
    kv_idx = torch.arange(n_video, device=v.device)
    allowed = BlockWindowMask(grid, block).mask_mod(None, None, rows[:, None], kv_idx[None, :])
    allowed = torch.cat(
        [allowed, torch.ones(len(rows), v.shape[2] - n_video, dtype=torch.bool, device=v.device)], 1
    )
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


@dataclass
class SparseStats:
    """Counts since the last reset: sparse / dense layer calls, and heads per pattern."""

    steps: int = 0
    dense_calls: int = 0
    sparse_calls: int = 0
    spatial_heads: int = 0
    temporal_heads: int = 0
    choices: list[list[str]] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.steps} steps: {self.sparse_calls} sparse / {self.dense_calls} dense attention "
            "calls"
        )
        if self.spatial_heads or self.temporal_heads:
            text += f"; heads spatial {self.spatial_heads}, temporal {self.temporal_heads}"
        return text


class SparseVideoBackend(Backend):
    """SVG: per head, spatial or temporal block-diagonal attention, chosen online.

    Args:
        grid: ``(t, h, w)`` of the video tokens (the first ``t h w`` of the sequence).
        spatial_block: block of the spatial pattern (default ``(1, h, w)``: one frame).
        temporal_block: block of the temporal pattern (default ``(t, 1, 1)``: one position).
        extra_tokens: global tokens after the video tokens (see module docstring).
        sample_rows: query rows sampled for the classification.
        seed: seed of the fixed row sample.
        inner: backend that runs the dense pieces.
        stats: a :class:`SparseStats` to count head choices into (optional).
    """

    name = "sparse_video"
    constraints = "full attention (mask None) over t h w video tokens + extra tokens"

    def __init__(
        self,
        *,
        grid: tuple[int, int, int],
        spatial_block: tuple[int, int, int] | None = None,
        temporal_block: tuple[int, int, int] | None = None,
        extra_tokens: int = 0,
        sample_rows: int = 64,
        seed: int = 0,
        inner: str | Backend = "sdpa",
        stats: SparseStats | None = None,
    ) -> None:
        t, h, w = grid
        self.grid = (t, h, w)
        self.spatial_block = tuple(spatial_block or (1, h, w))
        self.temporal_block = tuple(temporal_block or (t, 1, 1))
        for block in (self.spatial_block, self.temporal_block):
            BlockWindowMask(self.grid, block)  # names a block that does not divide the grid
        if extra_tokens < 0 or sample_rows < 1:
            raise ValueError(
                f"extra_tokens ({extra_tokens}) must be >= 0 and sample_rows ({sample_rows}) >= 1"
            )
        self.extra_tokens, self.sample_rows, self.seed = extra_tokens, sample_rows, seed
        self.inner = get_backend(inner) if isinstance(inner, str) else inner
        self.stats = stats
        n = math.prod(self.grid)
        self._rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[
            : min(sample_rows, n)
        ].sort().values

    def check(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None) -> None:
        super().check(q, k, v, mask)
        n = math.prod(self.grid) + self.extra_tokens
        if mask is not None and not mask.is_full:
            raise UnsupportedAttentionError(
                f"backend {self.name!r} replaces full attention; it cannot honour {mask!r}"
            )
        if q.shape[2] != n or k.shape[2] != n:
            raise UnsupportedAttentionError(
                f"backend {self.name!r} is set up for grid {self.grid} + {self.extra_tokens} "
                f"extra tokens = {n}; got q {q.shape[2]} and k {k.shape[2]} tokens"
            )

    def classify(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """Bool per query head: ``True`` = temporal (its error on the sampled rows is lower)."""
        k, v = _expand_kv(q, k, v)
        rows = self._rows.to(q.device)
        n_video = math.prod(self.grid)
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        qs, kf, vf = q[:, :, rows].to(work), k.to(work), v.to(work)
        scores = qs @ kf.transpose(-2, -1) * scale  # b H r n
        dense = torch.softmax(scores, dim=-1) @ vf
        errors = [
            (_pattern_rows(scores, rows, vf, self.grid, block, n_video) - dense)
            .square()
            .mean(dim=(0, 2, 3))
            for block in (self.spatial_block, self.temporal_block)
        ]
        return errors[1] < errors[0]

    def run(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None, scale: float) -> Tensor:
        temporal = self.classify(q, k, v, scale)
        k, v = _expand_kv(q, k, v)
        n_video = math.prod(self.grid)
        out = torch.empty_like(q)
        for block, heads in ((self.spatial_block, ~temporal), (self.temporal_block, temporal)):
            idx = heads.nonzero().flatten()
            if idx.numel():
                out[:, idx, :n_video] = block_diagonal_attention(
                    q[:, idx, :n_video], k[:, idx], v[:, idx], self.grid, block,
                    self.extra_tokens, scale, self.inner,
                )
        if self.extra_tokens:
            out[:, :, n_video:] = attend(q[:, :, n_video:], k, v, backend=self.inner, scale=scale)
        if self.stats is not None:
            n_temporal = int(temporal.sum())
            self.stats.temporal_heads += n_temporal
            self.stats.spatial_heads += len(temporal) - n_temporal
            self.stats.choices.append(["temporal" if x else "spatial" for x in temporal.tolist()])
        return out


# ---- controllers: install a backend on chosen layers, dense warm-up -----------------------


class _SparseController:
    """Hooks that run chosen attention modules under a sparse backend after a dense warm-up."""

    def __init__(
        self, model: nn.Module, modules: Sequence[nn.Module], *, dense_layers: int,
        dense_steps: int,
    ) -> None:
        if dense_layers < 0 or dense_steps < 0:
            raise ValueError(
                f"dense_layers ({dense_layers}) and dense_steps ({dense_steps}) must be >= 0"
            )
        if not modules:
            raise ValueError(f"no attention modules to make sparse in {type(model).__name__}")
        self.model, self.modules = model, list(modules)
        self.dense_layers, self.dense_steps = dense_layers, dense_steps
        self.stats = SparseStats()
        self._contexts: dict[int, object] = {}
        self._handles = [model.register_forward_pre_hook(self._count_step)]
        for layer, module in enumerate(self.modules):
            self._handles.append(module.register_forward_pre_hook(self._enter(layer)))
            self._handles.append(module.register_forward_hook(self._leave(layer), always_call=True))

    def _count_step(self, module, args) -> None:
        self.stats.steps += 1

    def backend_for(self, layer: int) -> Backend | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sparse_now(self, layer: int) -> bool:
        return layer >= self.dense_layers and self.stats.steps > self.dense_steps

    def _enter(self, layer: int):
        def hook(module, args):
            if not self._sparse_now(layer):
                self.stats.dense_calls += 1
                return
            self.stats.sparse_calls += 1
            context = attention_backend(self.backend_for(layer))
            context.__enter__()
            self._contexts[layer] = context

        return hook

    def _leave(self, layer: int):
        def hook(module, args, output):
            context = self._contexts.pop(layer, None)
            if context is not None:
                context.__exit__(None, None, None)

        return hook

    def reset(self) -> None:
        """Start a new sampling run: step count and statistics back to 0."""
        self.stats = SparseStats()
        self._on_reset()

    def _on_reset(self) -> None:
        pass

    def detach(self) -> None:
        """Remove every hook (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def _attention_of_blocks(model: nn.Module, attribute: str) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no `blocks` ModuleList; pass modules=[...]")
    missing = [i for i, b in enumerate(blocks) if not hasattr(b, attribute)]
    if missing:
        raise ValueError(f"blocks {missing} have no attribute {attribute!r}; pass modules=[...]")
    return [getattr(b, attribute) for b in blocks]


class SparseVideoAttention(_SparseController):
    """SVG on a model's full 3D attention layers (see module docstring).

    Args:
        model: the denoiser (its calls are counted as steps).
        grid: ``(t, h, w)`` of its video tokens; ``extra_tokens`` after them (global).
        modules: attention modules to make sparse (default: ``block.attn`` of every block in
            ``model.blocks``, e.g. DiT's); each must call ``attend`` with ``mask=None``.
        dense_layers: the first layers of ``modules`` kept dense.
        dense_steps: the first model calls kept dense.
        spatial_block, temporal_block, sample_rows, seed, inner: see
            :class:`SparseVideoBackend`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        grid: tuple[int, int, int],
        extra_tokens: int = 0,
        modules: Sequence[nn.Module] | None = None,
        dense_layers: int = 1,
        dense_steps: int = 2,
        spatial_block: tuple[int, int, int] | None = None,
        temporal_block: tuple[int, int, int] | None = None,
        sample_rows: int = 64,
        seed: int = 0,
        inner: str | Backend = "sdpa",
    ) -> None:
        modules = _attention_of_blocks(model, "attn") if modules is None else modules
        super().__init__(model, modules, dense_layers=dense_layers, dense_steps=dense_steps)
        self.backend = SparseVideoBackend(
            grid=grid, spatial_block=spatial_block, temporal_block=temporal_block,
            extra_tokens=extra_tokens, sample_rows=sample_rows, seed=seed, inner=inner,
            stats=self.stats,
        )

    def _on_reset(self) -> None:
        self.backend.stats = self.stats

    def backend_for(self, layer: int) -> Backend:
        return self.backend


class SlidingTileAttention(_SparseController):
    """Sliding-tile attention on ST-DiT's spatial attention (within each plane).

    Every block in ``model.blocks`` (:class:`~avblocks.dit.blocks.STDiTBlock`) gets
    ``spatial_mask = SlidingTileMask(grid=(1, gh, gw), tile=(1, tile, tile),
    window=(1, window, window))`` with ``(gh, gw) = model.grid`` token rows x columns (a
    pre-hook fills the keyword when the caller gave none), and its spatial ``attn`` runs
    under :class:`SlidingTileBackend` once the warm-up is over (before, and in the first
    ``dense_layers`` blocks, the mask is not passed: dense). ``tile`` must divide ``g`` and
    ``window <= g / tile``, except on an axis shorter than ``tile`` (the demo's ``(1, 16)``
    row tokens have one column): there the tile is the whole axis. Temporal attention (six
    keys) stays dense.

    Args: ``model`` (an ST-DiT: ``blocks``, ``grid`` = token rows, columns per plane, or one
    side), ``tile``,
    ``window`` (tiles), ``dense_layers``, ``dense_steps``, ``inner`` (backend of the tiles).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tile: int,
        window: int,
        dense_layers: int = 1,
        dense_steps: int = 2,
        inner: str | Backend = "sdpa",
    ) -> None:
        g = getattr(model, "grid", None)
        g = (g, g) if isinstance(g, int) else g
        if not (isinstance(g, tuple) and len(g) == 2 and all(isinstance(v, int) for v in g)):
            raise ValueError(f"{type(model).__name__} has no `grid` (token rows, columns per plane)")
        # an axis shorter than the tile (row tokens: one column) is one tile, unrestricted
        tiles = tuple(side if side < tile else tile for side in g)
        windows = tuple(1 if side < tile else window for side in g)
        self.mask = SlidingTileMask(grid=(1, *g), tile=(1, *tiles), window=(1, *windows))
        modules = _attention_of_blocks(model, "attn")
        super().__init__(model, modules, dense_layers=dense_layers, dense_steps=dense_steps)
        self.backend = SlidingTileBackend(inner=inner)
        for layer, block in enumerate(model.blocks):
            self._handles.append(
                block.register_forward_pre_hook(self._inject(layer), with_kwargs=True)
            )

    def _inject(self, layer: int):
        def hook(module, args, kwargs):
            if self._sparse_now(layer) and kwargs.get("spatial_mask") is None and len(args) < 3:
                return args, {**kwargs, "spatial_mask": self.mask}
            return None

        return hook

    def backend_for(self, layer: int) -> Backend:
        return self.backend

    @property
    def density(self) -> float:
        """Fraction of query-key pairs of a plane's spatial attention that are computed."""
        return self.mask.density
