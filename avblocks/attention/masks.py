"""Attention masks that know their structure.

A :class:`Mask` describes which keys each query may attend to, for one ``(q_len, kv_len)``
pair, the same for every batch element and head. It can be consumed in two ways:

- ``dense(device)``: a boolean ``nq nk`` matrix, ``True`` = may attend (SDPA, math backend);
  cached per device (treat it as read-only: it is shared);
- ``mask_mod(b, h, q_idx, kv_idx)``: a FlexAttention index function built from tensor ops
  only (no Python branching on values), so it vectorises over index tensors of any
  broadcastable shape. ``dense`` is computed from it, so the two never disagree.

``block_mask(block_size, device)`` builds (and caches) the FlexAttention ``BlockMask``: it
evaluates ``mask_mod`` chunk by chunk of query blocks and records, per ``block_size``
tile, whether the tile is empty (skipped), full (no mask evaluated) or partial.

Every mask is a value: two masks with the same family and arguments compare equal and
hash equal (``key``). Dense matrices, block masks and densities are cached in one shared
LRU cache keyed by ``key()`` (bounded to 1 GiB), so blocks may build their mask anew in
every forward at no cost; flex kernels are compiled once per key (see ``flex.py``).

Invariant of every family here: every query row has at least one allowed key (a fully
masked row has no well-defined softmax and backends disagree on it). Families whose
arguments could break this (:class:`GroupMask` with group ids) check it.

Token orders: a grid ``(t, h, w)`` of tokens is flattened frame-major ``(t h w)``
(``einops.rearrange(x, "b c t h w -> b (t h w) c")``), the library's canonical order.
"""

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool
from torch import Tensor

from avblocks.config import check_int

__all__ = [
    "Mask",
    "FullMask",
    "FrameCausalMask",
    "BlockWindowMask",
    "GroupMask",
    "SlidingTileMask",
    "RandomShiftMask",
]

# Query rows evaluated at once by dense()/density/block_mask(): bounds the int64 temporaries
# of mask_mod to about ROW_CHUNK * kv_len * 8 bytes.
_ROW_CHUNK = 1024


def _triple(name: str, value: object) -> tuple[int, int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"{name} ({value!r}) must be a tuple of three integers (t, h, w)")
    return tuple(int(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value)


def _grid_coords(idx: Tensor, grid: tuple[int, int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Token index in ``(t h w)`` order -> its (t, h, w) coordinates."""
    _, h, w = grid
    return idx // (h * w), (idx // w) % h, idx % w


class _MaskCache:
    """Least-recently-used cache of what masks derive (dense matrices, block masks,
    densities), keyed by the mask's ``key()``: equal masks built anew in every forward share
    one entry. Bounded by ``max_bytes`` (an entry larger than that is not kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple):
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple, value: object, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.max_bytes or len(self._items) > 4096:
            _, (_, freed) = self._items.popitem(last=False)
            self._bytes -= freed

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


_CACHE = _MaskCache(max_bytes=1 << 30)
"""Shared cache of mask-derived tensors (1 GiB); ``avblocks.attention.masks._CACHE.clear()``."""


class Mask:
    """Base class: which keys each query may attend to (``True`` = may attend).

    Subclasses set ``q_len``/``kv_len``, implement :meth:`mask_mod` and :meth:`key`
    (the arguments that define the mask, used for equality, hashing and caches).
    """

    q_len: int
    kv_len: int

    # ---- to implement -------------------------------------------------------------------
    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        """FlexAttention ``mask_mod``: boolean, broadcast over the index tensors."""
        raise NotImplementedError(f"{type(self).__name__} does not implement mask_mod")

    def key(self) -> tuple:
        """The arguments that define this mask (family name first)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement key()")

    # ---- for subclasses ---------------------------------------------------------------------
    def _on_device(self, table: Tensor, device: torch.device) -> Tensor:
        """``table`` (an index or time table of this mask) on ``device``, copied once per device
        into ``self._tables`` (a dict the subclass makes in ``__init__``, so the lookup compiles):
        ``mask_mod`` runs on the device of the indices FlexAttention passes in."""
        key = (id(table), device)
        if key not in self._tables:
            self._tables[key] = table.to(device)
        return self._tables[key]

    # ---- derived --------------------------------------------------------------------------
    @property
    def is_full(self) -> bool:
        """True when every query sees every key (backends may then drop the mask)."""
        return False

    @property
    def is_causal(self) -> bool:
        """True when the mask is exactly SDPA's ``is_causal`` (lower triangle, nq == nk)."""
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        name, *args = self.key()
        return f"{name}{tuple(args)}"

    def _cache(self) -> "_MaskCache":
        return _CACHE

    def _rows(self, start: int, stop: int, device: torch.device | str | None) -> Tensor:
        """Mask rows ``start:stop`` as a dense boolean ``(stop - start, kv_len)`` tensor."""
        q_idx = torch.arange(start, stop, device=device).view(-1, 1)
        kv_idx = torch.arange(self.kv_len, device=device).view(1, -1)
        zero = torch.zeros((), dtype=torch.long, device=device)
        out = self.mask_mod(zero, zero, q_idx, kv_idx)
        return out.expand(stop - start, self.kv_len).to(torch.bool)

    def dense(self, device: torch.device | str | None = None) -> Bool[Tensor, "nq nk"]:
        """The boolean ``nq nk`` matrix (``True`` = may attend), cached per device."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        cache = self._cache()
        if torch.compiler.is_compiling():
            # Traced: built inside the graph, no Python-side cache mutation while tracing.
            return self._rows(0, self.q_len, device)
        found = cache.get((self.key(), "dense", device))
        if found is None:
            found = torch.cat(
                [
                    self._rows(s, min(s + _ROW_CHUNK, self.q_len), device)
                    for s in range(0, self.q_len, _ROW_CHUNK)
                ]
            )
            cache.put((self.key(), "dense", device), found, found.numel())
        return found

    @property
    def density(self) -> float:
        """Fraction of (query, key) pairs allowed, exact (counted once, cached)."""
        cache = self._cache()
        found = cache.get((self.key(), "density"))
        if found is None:
            dense = cache.get((self.key(), "dense", torch.device("cpu")))
            if dense is None and type(self).mask_mod is Mask.mask_mod:
                dense = self.dense()  # a mask given only by its dense matrix
            if dense is not None:
                count = int(dense.sum())
            else:
                count = sum(
                    int(self._rows(s, min(s + _ROW_CHUNK, self.q_len), None).sum())
                    for s in range(0, self.q_len, _ROW_CHUNK)
                )
            found = count / (self.q_len * self.kv_len)
            cache.put((self.key(), "density"), found, 0)
        return found

    def block_mask(self, block_size: int = 128, device: torch.device | str | None = None):
        """FlexAttention ``BlockMask`` for this mask (batch and heads broadcast), cached.

        Built from the structure in ``block_size`` tiles: a tile with no allowed pair is
        skipped, a tile where all pairs are allowed is "full" (``mask_mod`` not evaluated
        there), the rest are partial. Evaluated a chunk of query blocks at a time, so the
        whole ``nq nk`` matrix is never held.
        """
        from torch.nn.attention.flex_attention import BlockMask

        device = torch.device(device) if device is not None else torch.device("cpu")
        block_size = check_int("block_size", block_size)
        cache = self._cache()
        found = cache.get((self.key(), "block_mask", block_size, device))
        if found is not None:
            return found
        nqb = math.ceil(self.q_len / block_size)
        nkb = math.ceil(self.kv_len / block_size)
        any_rows, all_rows = [], []
        rows_per_chunk = max(1, _ROW_CHUNK // block_size) * block_size
        for s in range(0, self.q_len, rows_per_chunk):
            stop = min(s + rows_per_chunk, self.q_len)
            rows = self._rows(s, stop, device)
            # Pad to whole tiles; padding counts as "allowed" for all() and "not" for any(),
            # so a ragged edge tile is full iff all its real pairs are allowed.
            pad_q = -(stop - s) % block_size
            pad_k = -self.kv_len % block_size
            anyp = torch.nn.functional.pad(rows, (0, pad_k, 0, pad_q), value=False)
            allp = torch.nn.functional.pad(rows, (0, pad_k, 0, pad_q), value=True)
            tiles = (-1, block_size, nkb, block_size)
            any_rows.append(anyp.view(tiles).any(dim=(1, 3)))
            all_rows.append(allp.view(tiles).all(dim=(1, 3)))
        any_t = torch.cat(any_rows)[:nqb]
        full_t = torch.cat(all_rows)[:nqb]
        partial_t = any_t & ~full_t

        def to_blocks(sel: Tensor) -> tuple[Tensor, Tensor]:
            num = sel.sum(dim=1, dtype=torch.int32)
            # Selected kv-block indices first (stable sort puts True before False).
            order = torch.argsort((~sel).to(torch.int8), dim=1, stable=True).to(torch.int32)
            return num[None, None], order[None, None]

        kv_num, kv_idx = to_blocks(partial_t)
        full_num, full_idx = to_blocks(full_t)
        found = BlockMask.from_kv_blocks(
            kv_num,
            kv_idx,
            full_num,
            full_idx,
            BLOCK_SIZE=block_size,
            mask_mod=self.mask_mod,
            seq_lengths=(self.q_len, self.kv_len),
        )
        nbytes = sum(t.numel() * t.element_size() for t in (kv_num, kv_idx, full_num, full_idx))
        cache.put((self.key(), "block_mask", block_size, device), found, 2 * nbytes)
        return found


class FullMask(Mask):
    """Every query sees every key. ``attend(mask=None)`` means the same."""

    def __init__(self, q_len: int, kv_len: int) -> None:
        self.q_len = check_int("q_len", q_len)
        self.kv_len = check_int("kv_len", kv_len)

    @property
    def is_full(self) -> bool:
        return True

    def key(self) -> tuple:
        return ("FullMask", self.q_len, self.kv_len)

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return q_idx >= 0  # always True; kv_idx broadcast by the caller

    def _rows(self, start: int, stop: int, device) -> Tensor:
        return torch.ones(stop - start, self.kv_len, dtype=torch.bool, device=device)

    @property
    def density(self) -> float:
        return 1.0


class FrameCausalMask(Mask):
    """Causal over frames: a query in frame ``i`` sees every key of frames ``<= i``.

    Tokens are frame-major ``(t n)``: token ``j`` belongs to frame ``j // tokens_per_frame``.
    Within a frame attention is full (bidirectional). With ``tokens_per_frame == 1`` this is
    the ordinary token-causal mask, and SDPA runs it with ``is_causal=True``.
    """

    def __init__(self, num_frames: int, tokens_per_frame: int) -> None:
        self.num_frames = check_int("num_frames", num_frames)
        self.tokens_per_frame = check_int("tokens_per_frame", tokens_per_frame)
        self.q_len = self.kv_len = self.num_frames * self.tokens_per_frame

    @property
    def is_causal(self) -> bool:
        return self.tokens_per_frame == 1

    @property
    def is_full(self) -> bool:
        return self.num_frames == 1

    def key(self) -> tuple:
        return ("FrameCausalMask", self.num_frames, self.tokens_per_frame)

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        n = self.tokens_per_frame
        return (q_idx // n) >= (kv_idx // n)

    @property
    def density(self) -> float:
        t = self.num_frames
        return (t * (t + 1) / 2) / (t * t)


class BlockWindowMask(Mask):
    """Block-local windows on a ``(t, h, w)`` token grid, flattened ``(t h w)``.

    Each axis is cut into blocks of ``block`` tokens (``block[i]`` must divide ``grid[i]``).
    A query in block ``(Bt, Bh, Bw)`` sees a key in block ``(Kt, Kh, Kw)`` iff on every axis
    the block indices differ by at most ``halo`` **blocks**: ``|Bt - Kt| <= halo[0]`` etc.
    ``halo = (0, 0, 0)`` is block-diagonal (attention within one block only). A block equal
    to the whole axis leaves that axis unrestricted, e.g. ``block=(1, h, w)`` = per-frame
    spatial attention, ``block=(t, 1, 1)`` = per-position temporal attention.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        halo: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        grid, block, halo = _triple("grid", grid), _triple("block", block), _triple("halo", halo)
        for axis, g, bl, ha in zip("thw", grid, block, halo, strict=True):
            check_int(f"grid[{axis}]", g)
            check_int(f"block[{axis}]", bl)
            if g % bl:
                raise ValueError(f"block[{axis}] ({bl}) must divide grid[{axis}] ({g})")
            if isinstance(ha, bool) or not isinstance(ha, int) or ha < 0:
                raise ValueError(f"halo[{axis}] ({ha!r}) must be a non-negative integer")
        self.grid, self.block, self.halo = grid, block, halo
        self.q_len = self.kv_len = grid[0] * grid[1] * grid[2]

    @property
    def is_full(self) -> bool:
        return all(
            g // bl - 1 <= ha for g, bl, ha in zip(self.grid, self.block, self.halo, strict=True)
        )

    def key(self) -> tuple:
        return ("BlockWindowMask", self.grid, self.block, self.halo)

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        qc = _grid_coords(q_idx, self.grid)
        kc = _grid_coords(kv_idx, self.grid)
        ok = None
        for qa, ka, bl, ha in zip(qc, kc, self.block, self.halo, strict=True):
            near = (qa // bl - ka // bl).abs() <= ha
            ok = near if ok is None else ok & near
        return ok


class GroupMask(Mask):
    """Group-aligned mask (cross-modal): a query of group ``g`` sees the keys of group ``g``.

    ``q_groups`` / ``kv_groups`` are per-token integer group ids (a sequence or a 1-D
    integer tensor), so ``q_len = len(q_groups)`` and ``kv_len = len(kv_groups)`` may
    differ. Every group that has a query must have at least one key (else ValueError).
    For the common layout of ``num_groups`` contiguous groups of equal size use
    :meth:`GroupMask.uniform`, whose ``mask_mod`` is pure arithmetic (no table lookup).
    """

    def __init__(self, q_groups: Sequence[int] | Tensor, kv_groups: Sequence[int] | Tensor):
        q_ids = self._ids("q_groups", q_groups)
        kv_ids = self._ids("kv_groups", kv_groups)
        missing = sorted(set(q_ids.tolist()) - set(kv_ids.tolist()))
        if missing:
            raise ValueError(
                f"query groups {missing[:8]} have no keys in kv_groups: every query group "
                "needs at least one key"
            )
        self.q_ids, self.kv_ids = q_ids, kv_ids
        self.q_len, self.kv_len = len(q_ids), len(kv_ids)
        self._uniform: tuple[int, int, int] | None = None
        # A plain bool (not a tensor op at call time) so attend() compiles without breaks.
        self._is_full = len(set(q_ids.tolist()) | set(kv_ids.tolist())) == 1
        self._key = ("GroupMask", tuple(q_ids.tolist()), tuple(kv_ids.tolist()))
        self._tables: dict = {}

    @staticmethod
    def _ids(name: str, ids: Sequence[int] | Tensor) -> Tensor:
        if isinstance(ids, int):
            raise ValueError(
                f"{name} ({ids!r}) must be per-token group ids; for equal contiguous groups "
                "use GroupMask.uniform(num_groups=..., q_group_size=..., kv_group_size=...)"
            )
        t = torch.as_tensor(ids)
        if t.ndim != 1 or t.numel() == 0 or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(
                f"{name} must be a non-empty 1-D sequence of integer group ids, "
                f"got shape {tuple(t.shape)} dtype {t.dtype}"
            )
        return t.to(device="cpu", dtype=torch.long)

    @classmethod
    def uniform(cls, num_groups: int, q_group_size: int, kv_group_size: int) -> "GroupMask":
        """``num_groups`` contiguous groups: queries ``[g*q_group_size, (g+1)*q_group_size)``
        see keys ``[g*kv_group_size, (g+1)*kv_group_size)``."""
        g = check_int("num_groups", num_groups)
        qs = check_int("q_group_size", q_group_size)
        ks = check_int("kv_group_size", kv_group_size)
        mask = cls(torch.arange(g).repeat_interleave(qs), torch.arange(g).repeat_interleave(ks))
        mask._uniform = (g, qs, ks)
        mask._key = ("GroupMask.uniform", g, qs, ks)
        return mask

    @property
    def is_full(self) -> bool:
        return self._is_full

    def key(self) -> tuple:
        return self._key

    def __repr__(self) -> str:
        if self._uniform is not None:
            g, qs, ks = self._uniform
            return f"GroupMask.uniform(num_groups={g}, q_group_size={qs}, kv_group_size={ks})"
        return f"GroupMask(q_len={self.q_len}, kv_len={self.kv_len})"

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        if self._uniform is not None:
            _, qs, ks = self._uniform
            return (q_idx // qs) == (kv_idx // ks)
        q_ids = self._on_device(self.q_ids, q_idx.device)
        kv_ids = self._on_device(self.kv_ids, kv_idx.device)
        return q_ids[q_idx] == kv_ids[kv_idx]


class SlidingTileMask(Mask):
    """Sliding Tile Attention (STA) on a ``(t, h, w)`` grid, tokens in ``(t h w)`` order.

    The grid is cut into tiles of ``tile`` tokens (each must divide its axis), giving
    ``n = grid // tile`` tiles per axis. A query in tile ``q`` sees the keys of the
    ``window`` tiles per axis around it; near a border the window is shifted, not cut, so
    it always spans exactly ``window`` tiles (STA's clamped window): on each axis

        start = clamp(q - (window - 1) // 2, 0, n - window),  key tile k allowed iff
        start <= k < start + window.

    For odd ``window`` this is the window centred on ``q`` with its centre clamped to
    ``[window // 2, n - 1 - window // 2]``. ``window`` is counted in tiles, ``1 <= window <= n``;
    ``window == n`` leaves the axis unrestricted.

    Token order (``token_order``): ``"raster"`` (default) is the library's ``(t h w)``.
    ``"tiled"`` is STA's reordering: tiles one after another (tiles in raster order over the
    tile grid), the tokens of each tile contiguous (raster order inside the tile). The rule
    is the same; only which sequence position holds which token changes, so that tiles fill
    whole attention blocks and the block-sparse kernel skips more. Reorder a raster
    sequence with ``x[:, :, mask.permutation()]`` and undo with ``inverse_permutation()``.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        tile: tuple[int, int, int],
        window: tuple[int, int, int],
        token_order: str = "raster",
    ) -> None:
        if token_order not in ("raster", "tiled"):
            raise ValueError(f"token_order ({token_order!r}) must be 'raster' or 'tiled'")
        self.token_order = token_order
        grid, tile, window = _triple("grid", grid), _triple("tile", tile), _triple("window", window)
        for axis, g, ti, wi in zip("thw", grid, tile, window, strict=True):
            check_int(f"grid[{axis}]", g)
            check_int(f"tile[{axis}]", ti)
            if g % ti:
                raise ValueError(f"tile[{axis}] ({ti}) must divide grid[{axis}] ({g})")
            check_int(f"window[{axis}]", wi)
            if wi > g // ti:
                raise ValueError(
                    f"window[{axis}] ({wi}) must be at most the number of tiles on that axis "
                    f"({g // ti} = grid {g} / tile {ti})"
                )
        self.grid, self.tile, self.window = grid, tile, window
        self.num_tiles = tuple(g // ti for g, ti in zip(grid, tile, strict=True))
        self.q_len = self.kv_len = grid[0] * grid[1] * grid[2]

    @property
    def is_full(self) -> bool:
        return self.window == self.num_tiles

    def key(self) -> tuple:
        return ("SlidingTileMask", self.grid, self.tile, self.window, self.token_order)

    def __repr__(self) -> str:
        return (
            f"SlidingTileMask(grid={self.grid}, tile={self.tile}, window={self.window}, "
            f"token_order={self.token_order!r})"
        )

    def _tile_coords(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tile coordinates of the token at sequence position ``idx``."""
        if self.token_order == "tiled":
            per_tile = self.tile[0] * self.tile[1] * self.tile[2]
            return _grid_coords(idx // per_tile, self.num_tiles)
        coords = _grid_coords(idx, self.grid)
        return tuple(c // ti for c, ti in zip(coords, self.tile, strict=True))

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        qt, kt = self._tile_coords(q_idx), self._tile_coords(kv_idx)
        ok = None
        for qa, ka, wi, n in zip(qt, kt, self.window, self.num_tiles, strict=True):
            start = (qa - (wi - 1) // 2).clamp(0, n - wi)
            inside = (ka >= start) & (ka < start + wi)
            ok = inside if ok is None else ok & inside
        return ok

    def permutation(self) -> Tensor:
        """Raster index of the token at each sequence position of this mask's order."""
        if self.token_order == "raster":
            return torch.arange(self.q_len)
        (t, h, w), (tt, th, tw) = self.grid, self.tile
        raster = torch.arange(self.q_len).view(t // tt, tt, h // th, th, w // tw, tw)
        return raster.permute(0, 2, 4, 1, 3, 5).reshape(-1)

    def inverse_permutation(self) -> Tensor:
        """Sequence position (in this mask's order) of each raster token."""
        return torch.argsort(self.permutation())


class RandomShiftMask(Mask):
    """MM-Diffusion random-shift multimodal attention (queries: video, keys: audio).

    Queries are ``num_q_frames`` frames of ``q_tokens_per_frame`` tokens, keys
    ``num_kv_frames`` frames of ``kv_tokens_per_frame`` tokens, both frame-major.
    Query frame ``i`` sees the ``window`` key frames

        (floor(i * num_kv_frames / num_q_frames) + shift + j) mod num_kv_frames,
        j = 0 .. window - 1,

    i.e. the key frame aligned in time with ``i`` (the frame-rate ratio
    ``num_kv_frames / num_q_frames`` maps query frames onto key frames, rounded down),
    moved by ``shift`` and wrapped around the key sequence. ``1 <= window <= num_kv_frames``;
    ``shift`` is any integer (taken modulo ``num_kv_frames``). MM-Diffusion draws ``shift``
    at random per layer during training: draw it outside and build a new mask (masks are
    cached by value, so each distinct shift is built once).
    """

    def __init__(
        self,
        num_q_frames: int,
        q_tokens_per_frame: int,
        num_kv_frames: int,
        kv_tokens_per_frame: int,
        shift: int = 0,
        window: int = 1,
    ) -> None:
        self.num_q_frames = check_int("num_q_frames", num_q_frames)
        self.q_tokens_per_frame = check_int("q_tokens_per_frame", q_tokens_per_frame)
        self.num_kv_frames = check_int("num_kv_frames", num_kv_frames)
        self.kv_tokens_per_frame = check_int("kv_tokens_per_frame", kv_tokens_per_frame)
        if isinstance(shift, bool) or not isinstance(shift, int):
            raise ValueError(f"shift ({shift!r}) must be an integer")
        window = check_int("window", window)
        if window > num_kv_frames:
            raise ValueError(f"window ({window}) must be at most num_kv_frames ({num_kv_frames})")
        self.shift = shift % num_kv_frames
        self.window = window
        self.q_len = num_q_frames * q_tokens_per_frame
        self.kv_len = num_kv_frames * kv_tokens_per_frame

    @property
    def is_full(self) -> bool:
        return self.window == self.num_kv_frames

    def key(self) -> tuple:
        return (
            "RandomShiftMask",
            self.num_q_frames,
            self.q_tokens_per_frame,
            self.num_kv_frames,
            self.kv_tokens_per_frame,
            self.shift,
            self.window,
        )

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        fq, fk = self.num_q_frames, self.num_kv_frames
        qf = q_idx // self.q_tokens_per_frame
        kf = kv_idx // self.kv_tokens_per_frame
        start = (qf * fk) // fq + self.shift
        # Offset of key frame kf after the window start, modulo the key frames.
        offset = (kf - start) % fk
        return offset < self.window


MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
