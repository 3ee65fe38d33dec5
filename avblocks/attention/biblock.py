"""Bi-Block CrossAttn: block-local bidirectional video<->audio attention (ProAV-DiT), with the
MM-Diffusion random-shift variant.

Both streams share ``t``. Time is cut into blocks of ``block_frames`` frames: time block ``k`` is
frames ``[k*bt, (k+1)*bt)`` of both streams. Optionally the non-time axes are tiled too
(``spatial_blocks``, one count per non-time axis): with ``spatial_blocks=(nh, nw)`` the video
``b c t h w`` is cut into ``nh x nw`` tiles of ``h/nh x w/nw`` and the audio ``b c t f w'``
into ``nh x nw`` tiles of ``f/nh x w'/nw``.

What "aligned" means: along ``t`` alignment is physical (the same frames, i.e. the same span of
seconds). Along the other axes video rows and mel bins have no physical correspondence, so
tiles are aligned by *relative position*: video tile ``(i, j)`` (rows ``[i*h/nh, (i+1)*h/nh)``,
columns ``[j*w/nw, ...)``) pairs with audio tile ``(i, j)`` (mel bins ``[i*f/nh, (i+1)*f/nh)``,
spectrogram columns ``[j*w'/nw, ...)``); the sizes may differ, only the counts must match, and
each axis must be divisible by its count (``ValueError`` naming the sizes otherwise).

Visibility (exact): a video token in time block ``k``, tile ``p`` sees every audio token of
tile ``p`` in time blocks ``k - halo .. k + halo`` (clipped at the ends, no wrap-around), and
symmetrically an audio token in block ``k``, tile ``p`` sees the video tokens of tile ``p`` in
blocks ``k - halo .. k + halo``. Tiles never mix. ``halo = 0`` folds the blocks into the batch
(no mask); ``halo > 0`` folds the tiles into the batch and uses a block-band mask along time.

Random shift (MM-Diffusion's RS-MMA, training only): with ``max_shift > 0`` and the module in
training mode, each forward draws one integer ``shift`` uniformly in ``[0, max_shift]`` (from
the module's own generator when ``seed`` is given, else the global RNG) and the audio is rolled
by ``shift`` frames *with wrap-around* before pairing: video frame ``i`` then pairs with audio
frame ``(i + shift) mod t``, so video block ``k`` sees audio frames
``[(k-halo)*bt + shift, (k+halo+1)*bt + shift)`` mod ``t`` (the halo is clipped in the shifted
order), and audio is rolled back after the update, so each audio frame is updated in place by
the video frames it was paired with. In eval mode the shift is 0. ``forward(..., shift=s)``
forces a shift (e.g. for tests or for a fixed offset). Drawing the shift is a Python-side
random number: compile the module in eval mode or pass ``shift`` explicitly.

Everything else as in :class:`~avblocks.attention.gcm.GCMAttention`: pre-norm per stream, both directions read the
block's inputs, zero-initialised output projections (identity at init), no positional terms.
"""

import torch
from einops import rearrange
from torch import nn

from avblocks.attention.masks import Mask
from avblocks.attention.projections import BidirectionalCrossAttention
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["BiBlockCrossAttention", "BlockBandMask"]


class BlockBandMask(Mask):
    """Cross-attention band over time blocks: query block ``i`` sees key block ``j`` iff
    ``|i - j| <= halo``. Queries come in ``num_blocks`` blocks of ``q_block_len`` tokens, keys in
    ``num_blocks`` blocks of ``kv_block_len`` tokens (block-major)."""

    def __init__(self, num_blocks: int, q_block_len: int, kv_block_len: int, halo: int) -> None:
        for name, value in (("num_blocks", num_blocks), ("q_block_len", q_block_len),
                            ("kv_block_len", kv_block_len)):
            if value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1")
        if halo < 0:
            raise ValueError(f"halo ({halo}) must be >= 0")
        self.num_blocks, self.halo = num_blocks, halo
        self.q_block_len, self.kv_block_len = q_block_len, kv_block_len
        self.q_len, self.kv_len = num_blocks * q_block_len, num_blocks * kv_block_len

    @property
    def is_full(self) -> bool:
        return self.halo >= self.num_blocks - 1

    def key(self) -> tuple:
        return ("BlockBandMask", self.num_blocks, self.q_block_len, self.kv_block_len, self.halo)

    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (q_idx // self.q_block_len - kv_idx // self.kv_block_len).abs() <= self.halo


def _tile(x: Tensor, blocks: tuple[int, ...]) -> Tensor:
    """``b c t ...`` -> ``(b tiles) t n c``: one sequence of ``t`` frames of ``n`` tokens per tile."""
    if len(blocks) == 2:
        return rearrange(x, "b c t (nh bh) (nw bw) -> (b nh nw) t (bh bw) c",
                         nh=blocks[0], nw=blocks[1])
    if len(blocks) == 1:
        return rearrange(x, "b c t (nh bh) -> (b nh) t bh c", nh=blocks[0])
    return rearrange(x.reshape(x.shape[0], x.shape[1], x.shape[2], -1), "b c t n -> b t n c")


def _untile(tiles: Tensor, like: Tensor, blocks: tuple[int, ...]) -> Tensor:
    if len(blocks) == 2:
        nh, nw = blocks
        return rearrange(tiles, "(b nh nw) t (bh bw) c -> b c t (nh bh) (nw bw)",
                         nh=nh, nw=nw, bh=like.shape[3] // nh)
    if len(blocks) == 1:
        return rearrange(tiles, "(b nh) t bh c -> b c t (nh bh)", nh=blocks[0])
    return rearrange(tiles, "b t n c -> b c t n").reshape(like.shape)


class BiBlockCrossAttention(nn.Module):
    """Block-local bidirectional cross-attention; returns ``(video', audio')``.

    Args:
        video_dim, audio_dim: channels of each stream.
        block_frames: frames per time block ``bt`` (must divide ``t``).
        spatial_blocks: tiles per non-time axis, e.g. ``(2, 2)`` for volumes or ``(2,)`` for
            planes; ``()`` (default) = no tiling (then any layouts ``b c t ...`` are accepted).
        halo: neighbouring time blocks seen on each side (0 = the matching block only).
        max_shift: largest random audio shift in frames during training (0 = off).
        seed: seed of the generator for the random shift (``None``: global RNG).
        dim, heads, kv_heads, qk_norm, qkv_bias, norm_layer: see
            :class:`BidirectionalCrossAttention`.
    """

    def __init__(
        self,
        *,
        video_dim: int,
        audio_dim: int,
        block_frames: int = 1,
        spatial_blocks: tuple[int, ...] = (),
        halo: int = 0,
        max_shift: int = 0,
        seed: int | None = None,
        dim: int | None = None,
        heads: int = 8,
        kv_heads: int | None = None,
        qk_norm: bool = False,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        spatial_blocks = tuple(spatial_blocks)
        if block_frames < 1:
            raise ValueError(f"block_frames ({block_frames}) must be >= 1")
        if len(spatial_blocks) > 2 or any(n < 1 for n in spatial_blocks):
            raise ValueError(f"spatial_blocks ({spatial_blocks}) must be () or one or two "
                             f"positive counts (one per non-time axis)")
        if halo < 0 or max_shift < 0:
            raise ValueError(f"halo ({halo}) and max_shift ({max_shift}) must be >= 0")
        self.block_frames, self.spatial_blocks = block_frames, spatial_blocks
        self.halo, self.max_shift = halo, max_shift
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.cross = BidirectionalCrossAttention(
            video_dim=video_dim, audio_dim=audio_dim, dim=dim, heads=heads, kv_heads=kv_heads,
            qk_norm=qk_norm, qkv_bias=qkv_bias, norm_layer=norm_layer)

    def _check(self, name: str, x: Tensor) -> None:
        t, blocks = x.shape[2], self.spatial_blocks
        if t % self.block_frames:
            raise ValueError(f"t ({t}) must be divisible by block_frames ({self.block_frames})")
        if blocks and x.ndim != 3 + len(blocks):
            raise ValueError(f"{name} has shape {tuple(x.shape)}: spatial_blocks {blocks} needs "
                             f"{len(blocks)} non-time axes")
        for axis, (size, n) in enumerate(zip(x.shape[3:], blocks, strict=False)):
            if size % n:
                raise ValueError(f"{name} axis {axis + 3} ({size}) must be divisible by its "
                                 f"spatial block count ({n})")

    def draw_shift(self) -> int:
        """The audio shift for this forward: random in training when ``max_shift > 0``, else 0."""
        if not (self.training and self.max_shift > 0):
            return 0
        return int(torch.randint(0, self.max_shift + 1, (), generator=self.generator))

    @shapecheck
    def forward(
        self,
        video: Float[Tensor, "b cv t *vrest"],
        audio: Float[Tensor, "b ca t *arest"],
        shift: int | None = None,
    ) -> tuple[Float[Tensor, "b cv t *vrest"], Float[Tensor, "b ca t *arest"]]:
        self._check("video", video)
        self._check("audio", audio)
        shift = self.draw_shift() if shift is None else shift
        t, bt, blocks = video.shape[2], self.block_frames, self.spatial_blocks
        if shift % t:
            audio_in = torch.roll(audio, shifts=-shift, dims=2)  # frame i <- frame i + shift
        else:
            audio_in = audio
        v, a = _tile(video, blocks), _tile(audio_in, blocks)  # (b p) t n c
        nv, na = v.shape[2], a.shape[2]
        if self.halo == 0:
            fold = "bp (k bt) n c -> (bp k) (bt n) c"
            v, a = self.cross(rearrange(v, fold, bt=bt), rearrange(a, fold, bt=bt))
            unfold = "(bp k) (bt n) c -> bp (k bt) n c"
            v = rearrange(v, unfold, k=t // bt, n=nv)
            a = rearrange(a, unfold, k=t // bt, n=na)
        else:
            k = t // bt
            v, a = self.cross(
                rearrange(v, "bp t n c -> bp (t n) c"), rearrange(a, "bp t n c -> bp (t n) c"),
                video_mask=BlockBandMask(k, bt * nv, bt * na, self.halo),
                audio_mask=BlockBandMask(k, bt * na, bt * nv, self.halo))
            v = rearrange(v, "bp (t n) c -> bp t n c", t=t)
            a = rearrange(a, "bp (t n) c -> bp t n c", t=t)
        video_out, audio_out = _untile(v, video, blocks), _untile(a, audio_in, blocks)
        if shift % t:
            audio_out = torch.roll(audio_out, shifts=shift, dims=2)
        return video_out, audio_out
