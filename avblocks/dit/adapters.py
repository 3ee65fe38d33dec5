"""Zero-initialised adapters around a frozen image DiT (AV-DiT, Wang et al. 2024).

AV-DiT keeps an image-pretrained DiT frozen and shared by both modalities and trains only
small additions: a temporal-attention layer per block for the video branch, low-rank
adapters (LoRA, :mod:`avblocks.dit.lora`) for the audio branch, and a shared audio-visual
fusion block. Every addition is **zero-initialised**, so a backbone with fresh adapters
computes exactly what the frozen backbone computes; training moves away from that point.

- :class:`BottleneckAdapter`: ``x + up(GELU(down(LayerNorm(x))))`` (Houlsby-style), ``up`` zero;
- :class:`TemporalAdapter`: residual self-attention across frames at each token position,
  zero output projection, optional frame positions;
- :class:`AdaptedDiTBlock`: a frozen :class:`~avblocks.dit.blocks.DiTBlock` run on every
  frame of ``b t n d``, with the temporal adapter inserted after its attention branch and
  the bottleneck adapter after its MLP branch;
- :class:`AVFusionBlock`: bidirectional audio <-> video cross-attention, zero output
  projections.

Freezing the backbone, counting and saving only the adapters:
:mod:`avblocks.dit.adapter_io`. The adapters here leave the block they are given as it is
(freeze it first; new parameters are trainable).
"""

from typing import Literal

import torch
from einops import rearrange
from torch import nn

from avblocks.attention.masks import Mask
from avblocks.attention.projections import BidirectionalCrossAttention, MultiHeadAttention
from avblocks.config import check_int
from avblocks.dit.blocks import DiTBlock, STDiTBlock
from avblocks.dit.modulation import modulate, to_tokens
from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "BottleneckAdapter",
    "TemporalAdapter",
    "AdaptedDiTBlock",
    "AVFusionBlock",
    "frame_position_embedding",
]


# Module-level alias: a one-word shape string inside an annotation reads as a forward
# reference to pyflakes (F821).
FramePositionsIn = Float[Tensor, "t"]


# --------------------------------------------------------------------------------------------
# Bottleneck and temporal adapters
# --------------------------------------------------------------------------------------------


class BottleneckAdapter(nn.Module):
    """``x + up(GELU(down(LayerNorm(x))))`` on the last axis; starts as the identity.

    ``down``: ``Linear(hidden_size, bottleneck)`` (xavier-uniform, zero bias); ``up``:
    ``Linear(bottleneck, hidden_size)`` zero (weight and bias). The LayerNorm has affine
    parameters (the adapter sees the un-modulated residual stream). Exact GELU.

    Args:
        hidden_size: token width ``d``.
        bottleneck: inner width.
    """

    def __init__(self, *, hidden_size: int, bottleneck: int = 64) -> None:
        super().__init__()
        check_int("hidden_size", hidden_size)
        check_int("bottleneck", bottleneck)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @shapecheck
    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        return x + self.up(self.act(self.down(self.norm(x))))


@shapecheck
def frame_position_embedding(
    positions: FramePositionsIn, dim: int, base: float = 10000.0
) -> Float[Tensor, "t dim"]:
    """Sin-cos code of (possibly fractional) frame positions, ``[sin(p w_i), cos(p w_i)]``.

    ``w_i = base ** (-i / (dim/2))``, sines first (the convention of
    :func:`avblocks.attention.positional.sincos_1d`, which this equals at integer
    positions). Computed in float64, returned float32. ``dim`` must be even.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim ({dim}) must be even and >= 2")
    half = dim // 2
    omega = base ** (-torch.arange(half, dtype=torch.float64, device=positions.device) / half)
    angle = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).to(torch.float32)


FramePositions = Literal["sincos", "learned", "none"]


class TemporalAdapter(nn.Module):
    """Residual self-attention across frames at each token position: ``b t n d -> b t n d``.

    ``x + attn(LayerNorm(x) + pos)`` with the tokens folded to ``(b n) t d``, so token
    ``(t, i)`` attends to ``(t', i)`` for every frame ``t'`` (all frames, or those allowed by
    ``mask``, a ``t x t`` :class:`~avblocks.attention.masks.Mask` such as
    ``FrameCausalMask``). The attention's output projection is zero (weight and bias): a
    fresh adapter is the identity; its gradient is not zero, so it learns.

    Choices: unconditioned (no adaLN: AV-DiT's temporal layer is a plain attention layer;
    the surrounding frozen block is conditioned); pre-norm with affine LayerNorm; frame
    positions enter only the attention input, never the residual stream:

    - ``"sincos"`` (default): :func:`frame_position_embedding` of ``0..t-1``, any ``t``;
    - ``"learned"``: a ``max_frames x d`` table, normal(std 0.02), ``t <= max_frames``;
    - ``"none"``: permutation-equivariant over frames.

    Args:
        hidden_size: token width ``d``.
        num_heads: attention heads (must divide ``hidden_size``).
        frame_positions: ``"sincos"``, ``"learned"`` or ``"none"``.
        max_frames: length of the learned table (``"learned"`` only).
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        num_heads: int,
        frame_positions: FramePositions = "sincos",
        max_frames: int = 64,
    ) -> None:
        super().__init__()
        check_int("hidden_size", hidden_size)
        check_int("num_heads", num_heads)
        check_int("max_frames", max_frames)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if frame_positions not in ("sincos", "learned", "none"):
            raise ValueError(
                f"frame_positions ({frame_positions!r}) must be 'sincos', 'learned' or 'none'"
            )
        if frame_positions == "sincos" and hidden_size % 2:
            raise ValueError(f"hidden_size ({hidden_size}) must be even for sin-cos frame positions")
        self.hidden_size = hidden_size
        self.frame_positions = frame_positions
        self.max_frames = max_frames
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = MultiHeadAttention(dim=hidden_size, heads=num_heads, zero_init_out=True)
        if frame_positions == "learned":
            self.frame_embed = nn.Parameter(torch.zeros(max_frames, hidden_size))
            nn.init.normal_(self.frame_embed, std=0.02)

    def _positions(self, frames: int, like: Tensor) -> Tensor | None:
        if self.frame_positions == "none":
            return None
        if self.frame_positions == "learned":
            if frames > self.max_frames:
                raise ValueError(f"{frames} frames exceed max_frames ({self.max_frames})")
            return self.frame_embed[:frames].to(like.dtype)
        pos = torch.arange(frames, device=like.device, dtype=torch.float32)
        return frame_position_embedding(pos, self.hidden_size).to(like.dtype)

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b t n d"], mask: Mask | None = None
    ) -> Float[Tensor, "b t n d"]:
        b = x.shape[0]
        h = self.norm(x)
        pos = self._positions(x.shape[1], x)
        if pos is not None:
            h = h + pos[None, :, None, :]
        h = self.attn(rearrange(h, "b t n d -> (b n) t d"), mask=mask)
        return x + rearrange(h, "(b n) t d -> b t n d", b=b)


# --------------------------------------------------------------------------------------------
# A frozen DiT block with adapters, and the audio-visual fusion block
# --------------------------------------------------------------------------------------------


class AdaptedDiTBlock(nn.Module):
    """A (frozen) image :class:`~avblocks.dit.blocks.DiTBlock` on every frame of ``b t n d``,
    with adapters between its branches::

        x = x + gate_msa * block.attn(modulate(block.norm1(x), ...))   per frame (b t) n d
        x = temporal(x)                                                  across frames
        x = x + gate_mlp * block.mlp(modulate(block.norm2(x), ...))
        x = bottleneck(x)

    ``c`` is ``b d`` (one conditioning for all frames: the adaLN Linear runs on ``b`` rows,
    exactly as ``block`` does) or ``b t d`` (one per frame, e.g. per-frame timesteps). A
    missing adapter is ``nn.Identity``. With fresh (zero-initialised) adapters the output
    equals ``block`` applied to every frame separately. The block's parameters keep their
    names under ``block.`` and are not frozen here (use :func:`~avblocks.dit.adapter_io.freeze` on the backbone).

    Args:
        block: the image DiT block (shared, not copied).
        temporal: adapter across frames after the attention branch, or ``None``.
        bottleneck: adapter after the MLP branch, or ``None``.
    """

    def __init__(
        self,
        block: DiTBlock,
        *,
        temporal: TemporalAdapter | None = None,
        bottleneck: BottleneckAdapter | None = None,
    ) -> None:
        super().__init__()
        # An STDiTBlock is a DiTBlock too, but with its own temporal branch and 9 adaLN vectors.
        if not isinstance(block, DiTBlock) or isinstance(block, STDiTBlock):
            raise TypeError(f"AdaptedDiTBlock wraps an image DiTBlock, got {type(block).__name__}")
        for name, adapter in (("temporal", temporal), ("bottleneck", bottleneck)):
            width = None if adapter is None else adapter.norm.normalized_shape[0]
            if width is not None and width != block.hidden_size:
                raise ValueError(
                    f"{name} adapter width ({width}) != block hidden_size ({block.hidden_size})"
                )
        self.block = block
        self.temporal = temporal if temporal is not None else nn.Identity()
        self.bottleneck = bottleneck if bottleneck is not None else nn.Identity()

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b t n d"], c: Float[Tensor, "b *tc d"]
    ) -> Float[Tensor, "b t n d"]:
        block, b = self.block, x.shape[0]
        mods = [to_tokens(v, x) for v in block.adaLN_modulation(c)]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        h = modulate(block.norm1(x), shift_msa, scale_msa)
        h = block.attn(rearrange(h, "b t n d -> (b t) n d"))
        x = x + gate_msa * rearrange(h, "(b t) n d -> b t n d", b=b)
        x = self.temporal(x)
        x = x + gate_mlp * block.mlp(modulate(block.norm2(x), shift_mlp, scale_mlp))
        return self.bottleneck(x)


class AVFusionBlock(nn.Module):
    """Audio-visual fusion: every video token attends to every audio token and vice versa.

    ``(video b tv nv d, audio b ta na d) -> (video, audio)`` of the same shapes, by
    :class:`~avblocks.attention.projections.BidirectionalCrossAttention` on the flattened
    streams ``b (tv nv) d`` and ``b (ta na) d``: ``v' = v + A_va(n_v(v) + P_v, n_a(a) + P_a)``
    and symmetrically; both directions read the block's inputs (not each other's output).
    Both output projections are zero (weight and bias): a fresh block returns both streams
    unchanged.

    Choices: one block shared by both directions' callers (AV-DiT's single fusion block);
    unconditioned; full attention (no locality window: clips are short and AV-DiT fuses
    globally). Time alignment: with ``frame_positions=True`` (default) each token gets the
    sin-cos code (:func:`frame_position_embedding`) of its frame's *centre on a common clip
    time axis* measured in video frames, ``(k + 0.5) * tv / t_m - 0.5`` for frame ``k`` of a
    stream with ``t_m`` frames (video frames get ``0, 1, ...``; audio frames of a clip with
    ``ta != tv`` land between them), added to the normed tokens inside the attention only.
    Spatial positions are what the DiT already put into the tokens.

    Args:
        hidden_size: token width ``d`` of both streams.
        num_heads: attention heads (must divide ``hidden_size``).
        frame_positions: add the common-time frame code (needs an even ``hidden_size``).
    """

    def __init__(self, *, hidden_size: int, num_heads: int, frame_positions: bool = True) -> None:
        super().__init__()
        check_int("hidden_size", hidden_size)
        check_int("num_heads", num_heads)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if frame_positions and hidden_size % 2:
            raise ValueError(f"hidden_size ({hidden_size}) must be even for frame positions")
        self.hidden_size = hidden_size
        self.frame_positions = frame_positions
        self.cross = BidirectionalCrossAttention(
            video_dim=hidden_size, audio_dim=hidden_size, heads=num_heads
        )

    def _codes(self, frames: int, video_frames: int, like: Tensor) -> Tensor:
        k = torch.arange(frames, device=like.device, dtype=torch.float64)
        centre = (k + 0.5) * (video_frames / frames) - 0.5
        return frame_position_embedding(centre, self.hidden_size).to(like.dtype)

    @shapecheck
    def forward(
        self, video: Float[Tensor, "b tv nv d"], audio: Float[Tensor, "b ta na d"]
    ) -> tuple[Float[Tensor, "b tv nv d"], Float[Tensor, "b ta na d"]]:
        tv, nv = video.shape[1:3]
        ta, na = audio.shape[1:3]
        cross = self.cross
        v, a = cross.video_norm(video), cross.audio_norm(audio)
        if self.frame_positions:
            v = v + self._codes(tv, tv, v)[None, :, None, :]
            a = a + self._codes(ta, tv, a)[None, :, None, :]
        v = rearrange(v, "b t n d -> b (t n) d")
        a = rearrange(a, "b t n d -> b (t n) d")
        dv = rearrange(cross.video_from_audio(v, a), "b (t n) d -> b t n d", t=tv, n=nv)
        da = rearrange(cross.audio_from_video(a, v), "b (t n) d -> b t n d", t=ta, n=na)
        return video + dv, audio + da
