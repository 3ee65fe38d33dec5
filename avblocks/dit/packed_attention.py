"""The two attentions of ST-DiT on packed planes, over the flat token layout, through ``attend``.

For a :class:`~avblocks.dit.packed_tokens.PackedTokens` layout, :func:`within_planes` (each
token attends to the tokens of its own plane; on the time planes optionally only to nearby
rows) and :func:`across_planes` (each token attends to its across-plane group, see the
layout's ``across`` rule) take ``q, k, v`` in the flat ``(b N) d`` layout and return the
attention output in the same layout. Each is also written as one mask over the packed
sequence, :class:`PackedPlanesMask`, which says exactly which pairs attend; the two ways of
computing are the same attention (tested against each other and against the ``math``
backend on a mask built by hand).

How it runs (the backend is :func:`~avblocks.attention.dispatch.attend`'s choice:
argument, context, environment, default ``sdpa``):

- **segments** (every backend but FlexAttention): dense attention on equal-shape segments,
  one ``attend`` call per shape, no mask:

  - within a plane: every run of planes with the same token count is one ``(k b) h n e``
    view (no copy); windowed time planes go through the ``sliding_tile`` backend (gathered
    key tiles, cost linear in the rows);
  - across planes: a span of consecutive planes whose groups are "token ``u`` of each" (the
    position rule on planes of one grid, the time rule on row tokens) is one
    ``1 (b n h) k e`` view (no copy); other groups are gathered by size (an index copy of
    their ``q, k, v``) and scattered back; a group of one token returns its value. Under the
    time rule the ``hw`` tokens are appended as keys to every frame group, and their own
    queries attend to the whole sequence;
- **mask** (``flex`` / ``flex_eager``): one ``attend`` over the whole sequence with
  :class:`PackedPlanesMask`, FlexAttention skipping the empty tiles.

No padding token exists, so nothing depends on padding.
"""

from typing import Literal

import torch
from torch import Tensor

from avblocks.attention.dispatch import Backend, attend, get_backend
from avblocks.attention.flex import FlexBackend
from avblocks.attention.masks import Mask
from avblocks.attention.sparse_video import SlidingTileBackend
from avblocks.dit.packed_tokens import PackedTokens

__all__ = ["PackedPlanesMask", "within_planes", "across_planes", "across_plan"]

Kind = Literal["within", "across"]


class PackedPlanesMask(Mask):
    """The within-plane or across-plane attention of a packed layout as one mask over the
    packed sequence (tokens in the layout's token order, ``q_len = kv_len = N``)."""

    def __init__(self, layout: PackedTokens, kind: Kind) -> None:
        if kind not in ("within", "across"):
            raise ValueError(f"kind ({kind!r}) must be 'within' or 'across'")
        self.layout, self.kind = layout, kind
        self.q_len = self.kv_len = layout.num_tokens
        table = layout.token_table()
        # per token: local-time tile size and tile count of its plane (one tile = full)
        tile, tiles = [], []
        for p in layout.planes:
            mask = layout.window_mask(p)
            size = p.grid[0] if mask is None else mask.tile[0]
            tile += [size] * p.tokens
            tiles += [p.grid[0] // size] * p.tokens
        table["tile"], table["tiles"] = torch.tensor(tile), torch.tensor(tiles)
        self._tables = {torch.device("cpu"): table}

    def key(self) -> tuple:
        return ("PackedPlanesMask", self.layout.key(), self.kind)

    def _on(self, device: torch.device) -> dict[str, Tensor]:
        if device not in self._tables:
            self._tables[device] = {k: v.to(device) for k, v in self._tables[torch.device("cpu")].items()}
        return self._tables[device]

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        t = self._on(q_idx.device)
        rq, rk = t["row"][q_idx], t["row"][kv_idx]
        if self.kind == "within":
            size, tiles = t["tile"][q_idx], t["tiles"][q_idx]
            span = torch.clamp(tiles, max=3)
            qt, kt = rq // size, rk // size
            start = torch.maximum(torch.minimum(qt - 1, tiles - span), torch.zeros_like(qt))
            return (t["plane"][q_idx] == t["plane"][kv_idx]) & (kt >= start) & (kt < start + span)
        if self.layout.across == "position":
            return (rq == rk) & (t["col"][q_idx] == t["col"][kv_idx])
        tq, tk = t["time"][q_idx], t["time"][kv_idx]
        return (tq & tk & (rq == rk)) | ~tq | ~tk


def _is_flex(backend: Backend) -> bool:
    return isinstance(backend, FlexBackend)


def _heads(x: Tensor, heads: int) -> Tensor:
    """``m d -> m h e`` (a view)."""
    return x.view(x.shape[0], heads, -1)


def _masked(layout: PackedTokens, kind: Kind, q: Tensor, k: Tensor, v: Tensor, heads: int, batch: int,
            backend: Backend) -> Tensor:
    def seq(x: Tensor) -> Tensor:  # flat -> b h N e
        return layout.from_flat(x, batch).unflatten(-1, (heads, -1)).transpose(1, 2)

    out = attend(seq(q), seq(k), seq(v), mask=PackedPlanesMask(layout, kind), backend=backend)
    return layout.to_flat(out.transpose(1, 2).flatten(2))


def _spans(layout: PackedTokens, same) -> list[tuple[int, int]]:
    """Runs cut further into spans of consecutive planes for which ``same(a, b)`` holds."""
    spans = []
    for run in layout.runs:
        begin = run.first
        for pos in range(run.first + 1, run.first + run.count + 1):
            if pos == run.first + run.count or not same(layout.planes[begin], layout.planes[pos]):
                spans.append((begin, pos))
                begin = pos
    return spans


def within_planes(layout: PackedTokens, q: Tensor, k: Tensor, v: Tensor, heads: int, batch: int,
                  backend: str | Backend | None = None) -> Tensor:
    """Attention of every token over its own plane (flat ``(b N) d`` in and out)."""
    backend = get_backend(backend)
    if _is_flex(backend):
        return _masked(layout, "within", q, k, v, heads, batch, backend)
    pieces = []
    for first, stop in _spans(layout, lambda a, b: layout.window_mask(a) == layout.window_mask(b)):
        planes, rows = layout.planes[first:stop], layout.span_rows(first, stop, batch)
        qs, ks, vs = (x[rows].view(-1, planes[0].tokens, heads, x.shape[-1] // heads).transpose(1, 2)
                      for x in (q, k, v))  # (k b) h n e views
        mask = layout.window_mask(planes[0])
        inner = backend if mask is None else SlidingTileBackend(inner=backend)
        out = attend(qs, ks, vs, mask=mask, backend=inner)
        pieces.append(out.transpose(1, 2).reshape(-1, q.shape[-1]))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _strided(first: int, stop: int, layout: PackedTokens, batch: int, heads: int):
    """``1 (b n h) k e`` view of token ``u`` of each plane ``first..stop`` (one grid)."""
    rows, n = layout.span_rows(first, stop, batch), layout.planes[first].tokens

    def view(x: Tensor) -> Tensor:
        e = x.shape[-1] // heads
        return x[rows].view(stop - first, batch, n, heads, e).permute(1, 2, 3, 0, 4).reshape(1, -1, stop - first, e)

    return rows, view


def _strided_spans(layout: PackedTokens) -> list[tuple[int, int]]:
    """Spans of planes whose across groups are exactly "token u of each plane of the span"."""
    if layout.across == "time":
        # the time planes' row groups, when every time plane has one token per row and they
        # are consecutive with one grid
        planes = layout.time_planes
        first = layout.planes.index(planes[0])
        one = all(p.grid == (planes[0].grid[0], 1) for p in planes)
        return [(first, first + len(planes))] if one and len(planes) > 1 else []
    groups = layout.across_groups()
    plane_at = {}
    for pos, p in enumerate(layout.planes):
        for u in range(p.tokens):
            plane_at[p.start + u] = (pos, u)
    found: dict[tuple[int, int], int] = {}
    for group in groups:
        members = [plane_at[t] for t in group]
        positions = [m[0] for m in members]
        if (len(group) > 1 and positions == list(range(positions[0], positions[0] + len(positions)))
                and len({m[1] for m in members}) == 1
                and len({layout.planes[m[0]].grid for m in members}) == 1):
            span = (positions[0], positions[-1] + 1)
            found[span] = found.get(span, 0) + 1
    return [span for span, count in found.items() if count == layout.planes[span[0]].tokens]


def _append(group: Tensor, hw: Tensor) -> Tensor:
    """``1 (b n h) k e`` frame-group keys and ``b n h n_hw e`` hw keys -> ``1 (b n h) (k + n_hw) e``."""
    b, n, h, _, e = hw.shape
    joined = torch.cat([group.view(b, n, h, -1, e), hw], dim=3)
    return joined.view(1, b * n * h, -1, e)


def across_plan(layout: PackedTokens) -> dict:
    """What :func:`across_planes` runs for this layout (built once, kept on the layout; a model
    builds it at construction so that compiling never meets a first call)."""
    plan = getattr(layout, "_across_plan", None)
    if plan is not None:
        return plan
    spans = _strided_spans(layout)
    covered = set()
    for first, stop in spans:
        for p in layout.planes[first:stop]:
            covered.update(range(p.start, p.start + p.tokens))
    by_size: dict[int, list[list[int]]] = {}
    for group in layout.across_groups():
        if group[0] not in covered:
            by_size.setdefault(len(group), []).append(group)
    plan = {"spans": spans, "groups": {g: f"across groups {g}" for g in sorted(by_size)}}
    for g, name in plan["groups"].items():
        layout.keep_index(name, torch.tensor(by_size[g]))
    layout.keep_index("hw tokens", torch.tensor([t for p in layout.hw_planes for t in range(p.start, p.start + p.tokens)],
                                                dtype=torch.long))
    layout._across_plan = plan
    return plan


def across_planes(layout: PackedTokens, q: Tensor, k: Tensor, v: Tensor, heads: int, batch: int,
                  backend: str | Backend | None = None) -> Tensor:
    """Attention of every token over its across-plane group (flat ``(b N) d`` in and out)."""
    backend = get_backend(backend)
    if _is_flex(backend):
        return _masked(layout, "across", q, k, v, heads, batch, backend)
    plan, d, device = across_plan(layout), q.shape[-1], q.device
    e = d // heads
    time_rule = layout.across == "time"
    hw_rows = layout.flat_rows(layout.index("hw tokens", device), batch) if time_rule else None  # b n_hw

    def extra(x: Tensor, groups: int) -> Tensor:
        """The hw keys / values of each sample repeated for its ``groups`` groups: ``b groups n_hw h e``."""
        hw = _heads(x, heads)[hw_rows]  # b n_hw h e
        return hw.unsqueeze(1).expand(batch, groups, *hw.shape[1:])

    pieces: list[tuple[Tensor | slice, Tensor]] = []
    for first, stop in plan["spans"]:
        rows, view = _strided(first, stop, layout, batch, heads)
        qs, ks, vs = view(q), view(k), view(v)
        if time_rule:  # every frame group's keys, then the hw keys: one copy, b n h (k + n_hw) e
            n = layout.planes[first].tokens
            ks, vs = (_append(group, extra(x, n).permute(0, 1, 3, 2, 4)) for group, x in ((ks, k), (vs, v)))
        out = attend(qs, ks, vs, backend=backend)  # 1 (b n h) k e, stored k (b n h) e
        pieces.append((rows, out.transpose(1, 2).reshape(-1, d)))
    for size, name in plan["groups"].items():
        rows = layout.flat_rows(layout.index(name, device), batch)  # b S g
        if size == 1 and not time_rule:  # a token alone: its own value
            pieces.append((rows.flatten(), v[rows.flatten()]))
            continue
        groups = rows.shape[1]
        qs, ks, vs = (_heads(x, heads)[rows] for x in (q, k, v))  # b S g h e
        if time_rule:
            ks, vs = torch.cat([ks, extra(k, groups)], dim=2), torch.cat([vs, extra(v, groups)], dim=2)
        out = attend(*(x.flatten(0, 1).transpose(1, 2) for x in (qs, ks, vs)), backend=backend)
        pieces.append((rows.flatten(), out.transpose(1, 2).reshape(-1, d)))
    if time_rule and len(hw_rows[0]):  # the hw tokens' own queries: over everything
        def seq(x: Tensor) -> Tensor:
            return layout.from_flat(x, batch).unflatten(-1, (heads, e)).transpose(1, 2)

        qh = _heads(q, heads)[hw_rows].transpose(1, 2)  # b h n_hw e
        out = attend(qh, seq(k), seq(v), backend=backend)
        pieces.append((hw_rows.flatten(), out.transpose(1, 2).reshape(-1, d)))
    if len(pieces) == 1 and isinstance(pieces[0][0], slice) and pieces[0][1].shape[0] == q.shape[0]:
        return pieces[0][1]
    index = torch.cat([torch.arange(r.start, r.stop, device=device) if isinstance(r, slice) else r
                       for r, _ in pieces])
    values = torch.cat([val for _, val in pieces])
    return values.new_empty(q.shape).index_copy(0, index, values)

