"""The token layout of ST-DiT on packed planes: six planes as one token sequence, no padding.

A :class:`PackedTokens` says, for the six tri-plane latents of a sounding video (shapes in
:data:`~avblocks.latent.planes.PLANE_ORDER`) and a denoiser patch ``(P, Q)``:

- **each plane's own patch and grid**: the patch cropped to the plane,
  ``(p, q) = (min(P, rows), min(Q, cols))``, and the plane cut into ``ceil(rows / p) x
  ceil(cols / q)`` tokens (a plane that the patch does not divide gets zero cells on its
  last token row / column; no token is ever all padding). With ProAV-DiT's row patches
  ``(1, Q)``, Q at least every plane's width, every token is one row of its plane, and on the
  ``th`` / ``tw`` planes a row is one latent frame;
- **the token order**: the time planes (``th``, ``tw`` of video then audio) first, then the
  ``hw`` planes, stably grouped so that planes with the same number of tokens are adjacent
  (a :class:`Run`). The order is internal to the model; conditioning and plane embeddings
  stay indexed by :data:`PLANE_ORDER`;
- **the flat layout** of a batch: a 2D tensor ``(b N) d`` holding plane after plane, each
  plane a contiguous ``b n d`` block ("plane-outer"). A run of ``k`` planes is then one
  contiguous ``k b n d`` block, so per-plane modulation broadcasts over it, within-plane
  attention is ``(k b) h n e`` and across-plane attention on one token index per plane is
  ``1 (b n h) k e``: every one of them a view, no copy (see
  :mod:`avblocks.dit.packed_attention`);
- **positions**: DiT's 2D sin-cos table on each plane's own token grid (row, column from the
  plane's top-left corner), so the rows of the time planes, latent frames, get the same
  time code in both modalities, and the values equal the canvas model's at the same cells;
- **the across-plane groups** (``across``):

  - ``"position"`` (the canvas model's rule): the tokens at the same grid position
    ``(row, column)`` of every plane that has one attend to each other. With planes that
    need no canvas padding this is exactly the canvas model's temporal attention; with row
    tokens the time planes' rows of one latent frame meet, and ``hw`` row ``r`` joins
    frame ``r`` (what the canvas model does, for want of a time axis in ``hw``);
  - ``"time"``: the tokens on row ``r`` of every time plane (all columns, both modalities:
    one latent frame) attend to each other and to every ``hw`` token; ``hw`` tokens, which
    have no time, attend to every token. So frame groups are exact in time, and the
    time-less planes are global context rather than assigned to an arbitrary frame;
- **local time attention** (``time_window``): within-plane attention on the time planes cut
  into tiles of ``time_window`` token rows; a query sees its own tile and the one before and
  after (at the clip's ends the three tiles are shifted inward, never cut: STA's rule,
  :class:`~avblocks.attention.masks.SlidingTileMask` on a ``(rows, 1, cols)`` grid). Cost
  grows linearly with the clip beyond the window; ``None`` or a window covering the clip is
  full attention, exactly.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from avblocks.attention.masks import SlidingTileMask
from avblocks.attention.positional import dit_sincos_2d
from avblocks.latent.planes import PLANE_ORDER

__all__ = ["ACROSS_RULES", "PlaneTokens", "Run", "PackedTokens"]

ACROSS_RULES = ("position", "time")
"""The across-plane group rules of :class:`PackedTokens` (module docstring)."""
Across = Literal["position", "time"]


@dataclass(frozen=True)
class PlaneTokens:
    """One plane's place in the packed sequence."""

    index: int  # in PLANE_ORDER: conditioning, plane embedding, latent order
    shape: tuple[int, int]  # latent rows, columns
    patch: tuple[int, int]  # (p, q): the model's patch cropped to the plane
    time: bool  # rows are latent frames (th / tw planes)
    start: int  # first token, per sample, in token order
    cell_start: int  # first latent cell in the packed latent

    @property
    def name(self) -> str:
        return PLANE_ORDER[self.index]

    @property
    def grid(self) -> tuple[int, int]:
        return (-(-self.shape[0] // self.patch[0]), -(-self.shape[1] // self.patch[1]))

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def padded(self) -> tuple[int, int]:
        """The plane's size rounded up to whole patches (extra cells are zero)."""
        return (self.grid[0] * self.patch[0], self.grid[1] * self.patch[1])

    @property
    def cells(self) -> int:
        return self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class Run:
    """Consecutive planes (in token order) with the same number of tokens per plane."""

    first: int  # position in token order of its first plane
    count: int  # planes
    tokens: int  # tokens per plane
    start: int  # first token, per sample

    def rows(self, batch: int) -> slice:
        """Its rows in the flat ``(b N) d`` layout."""
        return slice(batch * self.start, batch * (self.start + self.count * self.tokens))


def _check_patch(patch) -> tuple[int, int]:
    out = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if len(out) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise ValueError(f"patch ({patch!r}) must be a positive int or 2 positive ints")
    return out


class PackedTokens:
    """Token layout of the six planes (module docstring). A value: equal arguments, equal key.

    Args:
        shapes: ``(rows, cols)`` of the six planes in :data:`PLANE_ORDER`.
        patch: the denoiser's patch ``P`` or ``(P, Q)``, cropped to each plane.
        across: across-plane groups, ``"position"`` or ``"time"``.
        time_window: token rows per tile of local time attention (``None``: full).
    """

    def __init__(self, shapes: Sequence[tuple[int, int]], patch: int | tuple[int, int],
                 across: Across = "position", time_window: int | None = None) -> None:
        shapes = tuple(tuple(int(v) for v in s) for s in shapes)
        if len(shapes) != len(PLANE_ORDER) or any(len(s) != 2 or min(s) < 1 for s in shapes):
            raise ValueError(f"shapes ({shapes}) must be {len(PLANE_ORDER)} (rows, cols) pairs of "
                             f"positive ints, in the order {PLANE_ORDER}")
        big_p, big_q = _check_patch(patch)
        if across not in ACROSS_RULES:
            raise ValueError(f"across ({across!r}) must be one of {ACROSS_RULES}")
        if time_window is not None and (isinstance(time_window, bool) or not isinstance(time_window, int)
                                        or time_window < 1):
            raise ValueError(f"time_window ({time_window!r}) must be None or a positive int")
        self.shapes, self.patch, self.across, self.time_window = shapes, (big_p, big_q), across, time_window
        is_time = [name.endswith(("_th", "_tw")) for name in PLANE_ORDER]
        cell_starts = [sum(r * c for r, c in shapes[:i]) for i in range(len(shapes))]

        def tokens(i: int) -> int:
            (rows, cols), p, q = shapes[i], min(big_p, shapes[i][0]), min(big_q, shapes[i][1])
            return -(-rows // p) * -(-cols // q)

        sequence = [i for i in range(len(shapes)) if is_time[i]] + [i for i in range(len(shapes)) if not is_time[i]]
        first_seen: dict[int, int] = {}
        for i in sequence:
            first_seen.setdefault(tokens(i), len(first_seen))
        order = sorted(sequence, key=lambda i: first_seen[tokens(i)])  # stable: keeps the time planes first
        planes, start = [], 0
        for i in order:
            rows, cols = shapes[i]
            plane = PlaneTokens(index=i, shape=(rows, cols), patch=(min(big_p, rows), min(big_q, cols)),
                                time=is_time[i], start=start, cell_start=cell_starts[i])
            planes.append(plane)
            start += plane.tokens
        self.planes: tuple[PlaneTokens, ...] = tuple(planes)
        self.by_index = {p.index: p for p in planes}
        self.num_tokens = start
        self.num_cells = sum(p.cells for p in planes)
        runs, pos = [], 0
        while pos < len(planes):
            end = pos
            while end + 1 < len(planes) and planes[end + 1].tokens == planes[pos].tokens:
                end += 1
            runs.append(Run(first=pos, count=end - pos + 1, tokens=planes[pos].tokens, start=planes[pos].start))
            pos = end + 1
        self.runs: tuple[Run, ...] = tuple(runs)
        if time_window is not None:
            for p in self.planes:
                rows = p.grid[0]
                if p.time and rows > time_window and rows % time_window:
                    raise ValueError(f"time_window ({time_window}) must divide the {rows} token rows of plane "
                                     f"{p.name} (shape {p.shape}, patch {p.patch})")

        plane_ids, rows, cols, times, starts, counts = [], [], [], [], [], []
        for p in self.planes:
            gr, gc = p.grid
            plane_ids += [p.index] * p.tokens
            rows += [r for r in range(gr) for _ in range(gc)]
            cols += [c for _ in range(gr) for c in range(gc)]
            times += [p.time] * p.tokens
            starts += [p.start] * p.tokens
            counts += [p.tokens] * p.tokens
        self._rows, self._cols, self._times = rows, cols, times
        self._table = {"plane": torch.tensor(plane_ids), "row": torch.tensor(rows), "col": torch.tensor(cols),
                       "time": torch.tensor(times)}
        self._index = {"start": torch.tensor(starts), "count": torch.tensor(counts)}
        self._on_device: dict[tuple[str, torch.device], Tensor] = {}

    # ------------------------------------------------------------ identity
    def key(self) -> tuple:
        return ("PackedTokens", self.shapes, self.patch, self.across, self.time_window)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PackedTokens) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return (f"PackedTokens(shapes={self.shapes}, patch={self.patch}, across={self.across!r}, "
                f"time_window={self.time_window})")

    # ------------------------------------------------------------ tables
    @property
    def time_planes(self) -> tuple[PlaneTokens, ...]:
        return tuple(p for p in self.planes if p.time)

    @property
    def hw_planes(self) -> tuple[PlaneTokens, ...]:
        return tuple(p for p in self.planes if not p.time)

    def token_table(self) -> dict[str, Tensor]:
        """Per token (token order): ``plane`` (PLANE_ORDER index), ``row``, ``col`` (on its
        plane's token grid) and ``time`` (bool)."""
        return dict(self._table)

    def positions(self, dim: int) -> Tensor:
        """``N dim``: each plane's 2D sin-cos table on its own token grid, in token order."""
        return torch.cat([dit_sincos_2d(dim, p.grid) for p in self.planes])

    def window_mask(self, plane: PlaneTokens) -> SlidingTileMask | None:
        """The local time attention of a time plane (``None``: full attention)."""
        rows, cols = plane.grid
        if not plane.time or self.time_window is None or rows <= self.time_window:
            return None
        tiles = rows // self.time_window
        return SlidingTileMask(grid=(rows, 1, cols), tile=(self.time_window, 1, cols), window=(min(3, tiles), 1, 1))

    # ------------------------------------------------------------ the flat (b N) d layout
    def plane_rows(self, plane: PlaneTokens, batch: int) -> slice:
        """A plane's rows in the flat layout."""
        return slice(batch * plane.start, batch * (plane.start + plane.tokens))

    def span_rows(self, first: int, stop: int, batch: int) -> slice:
        """The rows of the planes at token-order positions ``first..stop-1`` in the flat layout."""
        last = self.planes[stop - 1]
        return slice(batch * self.planes[first].start, batch * (last.start + last.tokens))

    def keep_index(self, name: str, table: Tensor) -> None:
        """Keep an index table (CPU) under ``name`` for :meth:`index`."""
        self._index[name] = table.cpu()

    def index(self, name: str, device: torch.device) -> Tensor:
        """The index table ``name`` on ``device``, copied there once (outside compiled code:
        a traced copy is part of the graph instead)."""
        table = self._index[name]
        if table.device == device:
            return table
        if torch.compiler.is_compiling():
            return table.to(device)
        key = (name, device)
        if key not in self._on_device:
            self._on_device[key] = table.to(device)
        return self._on_device[key]

    def flat_rows(self, tokens: Tensor, batch: int) -> Tensor:
        """Flat row of (sample ``i``, token ``tokens``) for every sample: ``b *tokens.shape``."""
        start, count = self.index("start", tokens.device)[tokens], self.index("count", tokens.device)[tokens]
        local = tokens - start
        sample = torch.arange(batch, device=tokens.device).view(-1, *([1] * tokens.ndim))
        return batch * start + local + sample * count

    def to_flat(self, tokens: Tensor) -> Tensor:
        """``b N d`` (token order) -> the flat ``(b N) d`` layout."""
        if len(self.planes) == 1:
            return tokens.reshape(-1, tokens.shape[-1])
        return torch.cat([tokens[:, p.start:p.start + p.tokens].reshape(-1, tokens.shape[-1])
                          for p in self.planes])

    def from_flat(self, flat: Tensor, batch: int) -> Tensor:
        """The flat ``(b N) d`` layout -> ``b N d`` (token order)."""
        return torch.cat([flat[self.plane_rows(p, batch)].view(batch, p.tokens, -1) for p in self.planes], dim=1)

    def per_plane(self, values: Tensor, run: Run) -> Tensor:
        """``b planes d`` per-plane vectors (PLANE_ORDER) -> ``k b 1 d`` for the planes of ``run``."""
        index = [p.index for p in self.planes[run.first:run.first + run.count]]
        if index == list(range(index[0], index[0] + len(index))):
            picked = values[:, index[0]:index[0] + len(index)]
        else:
            picked = values[:, index]
        return picked.transpose(0, 1).unsqueeze(2).contiguous()  # k b 1 d, so outputs come out k b n d

    def run_view(self, flat: Tensor, run: Run, batch: int) -> Tensor:
        """``k b n d`` view of a run's rows."""
        return flat[run.rows(batch)].view(run.count, batch, run.tokens, flat.shape[-1])

    def addcmul(self, base: Tensor, factor: Tensor, other: Tensor, batch: int) -> Tensor:
        """``base + factor * other`` over the flat layout, where each argument is either flat
        tokens ``(b N) d`` or one vector per plane ``b planes d`` (broadcast over the plane's
        tokens), computed run by run on views. Without autograd (inference) the runs write
        into one output; with it (or compiling) they are joined by one ``cat``."""
        flat = next(t for t in (base, factor, other) if t.ndim == 2)

        def piece(t: Tensor, run: Run) -> Tensor:
            return self.run_view(t, run, batch) if t.ndim == 2 else self.per_plane(t, run)

        if len(self.runs) == 1:
            run = self.runs[0]
            out = torch.addcmul(piece(base, run), piece(factor, run), piece(other, run))
            return out.view(-1, flat.shape[-1])
        differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in (base, factor, other))
        if differentiable or torch.compiler.is_compiling():
            return torch.cat([torch.addcmul(piece(base, r), piece(factor, r), piece(other, r)).view(-1, flat.shape[-1])
                              for r in self.runs])
        dtype = torch.promote_types(torch.promote_types(base.dtype, factor.dtype), other.dtype)
        out = torch.empty(flat.shape, dtype=dtype, device=flat.device)
        for r in self.runs:
            torch.addcmul(piece(base, r), piece(factor, r), piece(other, r), out=self.run_view(out, r, batch))
        return out

    # ------------------------------------------------------------ across-plane groups
    def across_groups(self) -> list[list[int]]:
        """The across-plane groups of the ``"position"`` rule (tokens in token order), or of
        the time planes' rows for ``"time"`` (the ``hw`` tokens, global there, excluded)."""
        groups: dict[tuple[int, int], list[int]] = {}
        for t in range(self.num_tokens):
            if self.across == "time" and not self._times[t]:
                continue
            key = (self._rows[t], self._cols[t] if self.across == "position" else 0)
            groups.setdefault(key, []).append(t)
        return list(groups.values())

    def attention_pairs(self) -> dict[str, int]:
        """Query-key pairs computed per sample by the two attentions (for FLOP counts)."""
        within = 0
        for p in self.planes:
            mask = self.window_mask(p)
            within += p.tokens ** 2 if mask is None else round(mask.density * p.tokens ** 2)
        groups = self.across_groups()
        hw = sum(p.tokens for p in self.hw_planes) if self.across == "time" else 0
        across = sum(len(g) * (len(g) + hw) for g in groups) + hw * self.num_tokens
        return {"within": within, "across": across}

    def padding_cells(self) -> int:
        """Zero cells added to round planes up to whole patches (inside partial tokens)."""
        return sum(math.prod(p.padded) - p.cells for p in self.planes)
