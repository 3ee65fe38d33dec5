"""ST-DiT on packed planes: ProAV-DiT's denoiser with the six planes as one token sequence.

:class:`PackedSTDiT` is :class:`~avblocks.dit.stdit.STDiT` without the canvas: its input is
the packed latent ``b c L`` of :class:`~avblocks.dit.plane_pack.PlanePack` (every plane's
cells end to end), each plane is cut into tokens on its own grid, and the block's two
attentions run over the packed sequence as the layout says
(:class:`~avblocks.dit.packed_tokens.PackedTokens`: per-plane patches, token order, the
across-plane rule, local time attention; :mod:`avblocks.dit.packed_attention`: how they run).
No token is padding, so neither the cost nor the result depends on how unequal the planes
are (a 64-frame clip's canvas with row tokens is 82% padding).

Choices:

- **the same parameters as STDiT**, with the same names and shapes, built in the same order:
  the patch kernel ``(P, Q)``, cropped to each plane's patch ``(p, q)`` (the kernel's first
  ``p x q`` taps, exactly what the canvas computes on a token whose other cells are zero
  padding), the final Linear likewise cropped to ``(p q c)`` outputs, one learned
  embedding per plane, DiT blocks with a spatial (here: within-plane) and a temporal (here:
  across-plane) attention. So a canvas checkpoint loads as it is
  (:func:`packed_from_canvas`); with planes that need no canvas padding and the
  ``"position"`` rule the two models compute the same function (tested);
- **conditioning** is per plane (``b 6 d`` in :data:`~avblocks.latent.planes.PLANE_ORDER`);
  the block applies each plane's adaLN vectors to its tokens run by run
  (:meth:`PackedTokens.addcmul`), never expanding them per token;
- **timesteps** ``t``: one per sample (``b``), per plane (``b 6``) or per latent cell
  (``b L``, constant within each plane: what the samplers pass when planes are held clean,
  since the diffusion helpers index frames along the cells of a packed latent);
- **the residual stream** is the flat ``(b N) d`` layout (plane after plane, each plane a
  contiguous ``b n d`` block), so within-plane and across-plane attention read views of the
  ``q, k, v`` projections without copying them (see :mod:`avblocks.dit.packed_attention`).
  ``q``, ``k``, ``v`` are three Linears with the rows of DiT's fused ``qkv`` weight (the
  across-plane view needs each contiguous);
- gradient checkpointing, step caches, regional compile and guidance work as for STDiT
  (tested).
"""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from avblocks.dit.blocks import DiTAttention, STDiTBlock
from avblocks.dit.packed_attention import across_plan, across_planes, within_planes
from avblocks.dit.packed_tokens import PackedTokens
from avblocks.dit.patch import _as_tuple
from avblocks.dit.stdit import Labels, PlaneDenoiser, STDiT
from avblocks.latent.planes import PLANE_ORDER
from avblocks.saveload import SaveLoadMixin
from avblocks.typing import TYPECHECK, Float, shapecheck

__all__ = ["PackedSTDiTConfig", "PackedSTDiTBlock", "PackedSTDiT", "packed_from_canvas"]

DEMO_PLANES = ((8, 8), (16, 8), (16, 8), (16, 5), (16, 16), (16, 5))
"""The plane shapes of the demo's codec (16 frames of 32x32, 64 mel bins, configs/autoencoder_tiny.yaml)."""


@dataclass
class PackedSTDiTConfig:
    """Constructor arguments of :class:`PackedSTDiT` (see its docstring). Defaults: the demo's
    plane shapes with row patches, DiT-S widths, 9 classes."""

    in_channels: int = 4
    planes: tuple[tuple[int, int], ...] = DEMO_PLANES
    patch: int | tuple[int, int] = (1, 16)
    across: Literal["position", "time"] = "position"
    time_window: int | None = None
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 9
    class_dropout: float = 0.1
    timestep_scale: float = 1000.0
    gradient_checkpointing: bool = False


def _project(attention: DiTAttention, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``q, k, v`` from DiT's fused ``qkv`` (rows ``(three h e)``), each contiguous ``m d``."""
    w, b = attention.qkv.weight, attention.qkv.bias
    d = h.shape[-1]
    return tuple(F.linear(h, w[i * d:(i + 1) * d], None if b is None else b[i * d:(i + 1) * d])
                 for i in range(3))


class PackedSTDiTBlock(STDiTBlock):
    """:class:`STDiTBlock` on the flat packed tokens ``(b N) d`` of ``layout``, conditioning
    ``b planes d``: within-plane attention, across-plane attention, MLP, each modulated and
    gated per plane. Same parameters as STDiTBlock (a canvas block's weights load as they are).

    Args: ``layout`` (the token layout, shared by every block of a model) and STDiTBlock's.
    """

    def __init__(self, *, layout: PackedTokens, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.layout = layout

    def _attention(self, x: Tensor, norm: nn.Module, attention: DiTAttention, shift: Tensor, scale: Tensor,
                   gate: Tensor, attend_fn, batch: int) -> Tensor:
        h = self.layout.addcmul(shift, norm(x), 1 + scale, batch)
        q, k, v = _project(attention, h)
        out = attend_fn(self.layout, q, k, v, attention.num_heads, batch)
        return self.layout.addcmul(x, gate, attention.proj(out), batch)

    def attention_input(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c)[:2]
        return self.layout.addcmul(shift, self.norm1(x), 1 + scale, c.shape[0])

    @shapecheck
    def forward(self, x: Float[Tensor, "m d"], c: Float[Tensor, "b planes d"]) -> Float[Tensor, "m d"]:
        b = c.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, shift_tmp, scale_tmp, gate_tmp = (
            self.adaLN_modulation(c))
        x = self._attention(x, self.norm1, self.attn, shift_msa, scale_msa, gate_msa, within_planes, b)
        x = self._attention(x, self.norm_temporal, self.attn_temporal, shift_tmp, scale_tmp, gate_tmp,
                            across_planes, b)
        h = self.layout.addcmul(shift_mlp, self.norm2(x), 1 + scale_mlp, b)
        return self.layout.addcmul(x, gate_mlp, self.mlp(h), b)


class PackedSTDiT(SaveLoadMixin, PlaneDenoiser):
    """ST-DiT on packed planes: ``(x b c L, t b | b 6 | b L, y b) -> b c L`` (module docstring).

    Args:
        in_channels: latent channels ``c`` (output has the same).
        planes: ``(rows, cols)`` of the six planes in :data:`~avblocks.latent.planes.PLANE_ORDER` (the codec's).
        patch: the patch kernel ``P`` or ``(P, Q)``; each plane uses it cropped to its size.
            ``(1, Q)`` with ``Q`` at least every plane's width makes every token one plane row
            (on the time planes: one latent frame).
        across: the across-plane groups, ``"position"`` (the canvas model's) or ``"time"``
            (:class:`~avblocks.dit.packed_tokens.PackedTokens`).
        time_window: token rows per tile of local time attention on the time planes
            (``None``: full attention along the clip).
        hidden_size, depth, num_heads, mlp_ratio: as :class:`~avblocks.dit.stdit.STDiT`.
        num_classes, class_dropout, timestep_scale, gradient_checkpointing: as
            :class:`~avblocks.dit.stdit.STDiT`.
    """

    config_class = PackedSTDiTConfig

    def __init__(
        self,
        *,
        in_channels: int = 4,
        planes: tuple[tuple[int, int], ...] = DEMO_PLANES,
        patch: int | tuple[int, int] = (1, 16),
        across: Literal["position", "time"] = "position",
        time_window: int | None = None,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        num_classes: int = 9,
        class_dropout: float = 0.1,
        timestep_scale: float = 1000.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        kernel = _as_tuple("patch", patch, 2)
        self.layout = PackedTokens(planes, kernel, across=across, time_window=time_window)
        across_plan(self.layout)

        def block(**kw) -> PackedSTDiTBlock:
            return PackedSTDiTBlock(layout=self.layout, **kw)

        self._build(in_channels=in_channels, planes=len(PLANE_ORDER), patch=kernel, hidden_size=hidden_size,
                    depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=num_classes,
                    class_dropout=class_dropout, timestep_scale=timestep_scale,
                    gradient_checkpointing=gradient_checkpointing, block=block)
        self.patch = patch
        self.planes = self.layout.shapes
        self.register_buffer("pos_embed", self.layout.positions(hidden_size), persistent=False)

    @property
    def num_tokens(self) -> int:
        """Tokens per sample (no padding token)."""
        return self.layout.num_tokens

    @property
    def num_cells(self) -> int:
        """Latent cells per channel, ``L``."""
        return self.layout.num_cells

    def plane_times(self, t: Tensor) -> Tensor:
        """``b``, ``b 6`` or ``b L`` times -> ``b`` or ``b 6`` (one per plane, PLANE_ORDER)."""
        if t.ndim == 2 and t.shape[1] == self.num_cells and self.num_cells != self.frames:
            starts = [self.layout.by_index[i].cell_start for i in range(self.frames)]
            per_plane = t[:, starts]
            if TYPECHECK and not torch.compiler.is_compiling():
                sizes = torch.tensor([self.layout.by_index[i].cells for i in range(self.frames)], device=t.device)
                if not torch.equal(per_plane.repeat_interleave(sizes, dim=1), t):
                    raise ValueError("per-cell t must be constant within each plane (one time per plane)")
            return per_plane
        if t.ndim == 2 and t.shape[1] != self.frames:
            raise ValueError(f"t has {t.shape[1]} entries per sample: give one per plane ({self.frames}) "
                             f"or one per latent cell ({self.num_cells})")
        if t.ndim > 2:
            raise ValueError(f"t must be b, b planes or b L, got shape {tuple(t.shape)}")
        return t

    def _embed(self, x: Tensor) -> Tensor:
        """Packed latent -> flat tokens ``(b N) d`` (token order, plane after plane)."""
        w, bias = self.x_embedder.proj.weight, self.x_embedder.proj.bias  # d c P Q
        pieces = []
        for plane in self.layout.planes:
            (rows, cols), (p, q), (pr, pc) = plane.shape, plane.patch, plane.padded
            cells = x[:, :, plane.cell_start:plane.cell_start + plane.cells].unflatten(2, (rows, cols))
            if (pr, pc) != (rows, cols):
                cells = F.pad(cells, (0, pc - cols, 0, pr - rows))
            patches = rearrange(cells, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=q)
            kernel = w[:, :, :p, :q].permute(0, 2, 3, 1).reshape(w.shape[0], -1)
            tokens = F.linear(patches, kernel, bias)
            tokens = tokens + self.pos_embed[plane.start:plane.start + plane.tokens].to(tokens.dtype)
            pieces.append((tokens + self.plane_embed[plane.index]).reshape(-1, tokens.shape[-1]))
        return torch.cat(pieces)

    def _final(self, tokens: Tensor, c: Tensor) -> Tensor:
        """Flat tokens -> packed latent ``b c L`` (planes back in PLANE_ORDER)."""
        b, layer = c.shape[0], self.final_layer
        shift, scale = layer.adaLN_modulation(c)
        h = self.layout.addcmul(shift, layer.norm_final(tokens), 1 + scale, b)
        big_p, big_q = self.patch_size
        weight = layer.linear.weight.view(big_p, big_q, self.in_channels, -1)
        bias = layer.linear.bias.view(big_p, big_q, self.in_channels)
        out = [None] * self.frames
        for plane in self.layout.planes:
            (rows, cols), (p, q) = plane.shape, plane.patch
            values = F.linear(h[self.layout.plane_rows(plane, b)].view(b, plane.tokens, -1),
                              weight[:p, :q].reshape(-1, weight.shape[-1]), bias[:p, :q].reshape(-1))
            cells = rearrange(values, "b (h w) (p q c) -> b c (h p) (w q)", h=plane.grid[0], p=p, q=q)
            out[plane.index] = cells[:, :, :rows, :cols].flatten(2)
        return torch.cat(out, dim=2)

    @shapecheck
    def forward(self, x: Float[Tensor, "b c n"], t: Tensor, y: Labels) -> Float[Tensor, "b c n"]:
        """Prediction (noise / velocity / clean latent, as trained) with the shape of ``x``.

        ``t``: one diffusion time per sample (``b``), per plane (``b 6``, PLANE_ORDER) or per
        latent cell (``b L``); ``y``: labels, ``null_label`` for the unconditional branch of
        classifier-free guidance.
        """
        if tuple(x.shape[1:]) != (self.in_channels, self.num_cells):
            raise ValueError(f"x has shape {tuple(x.shape)}, expected b c L = (b, {self.in_channels}, "
                             f"{self.num_cells}) for planes {self.planes}")
        self._check_labels(y)
        tokens = self._embed(x)
        c = self.condition(self.plane_times(t), y).to(tokens.dtype)
        return self._final(self.forward_blocks(tokens, c), c)


def packed_from_canvas(model: STDiT, planes, *, across: Literal["position", "time"] = "position",
                       time_window: int | None = None) -> PackedSTDiT:
    """A :class:`PackedSTDiT` with ``model``'s weights (a canvas checkpoint converted) for the
    planes ``planes`` (``(rows, cols)`` x 6, each fitting the canvas). With planes that need no
    canvas padding and ``across="position"``, it computes what ``model`` computes."""
    shapes = tuple(tuple(int(v) for v in s) for s in planes)
    if model.frames != len(PLANE_ORDER):
        raise ValueError(f"the canvas model stacks {model.frames} planes; packing needs the six of {PLANE_ORDER}")
    too_big = [s for s in shapes if max(s) > model.side]
    if too_big:
        raise ValueError(f"planes {too_big} do not fit the canvas model's side {model.side}: it was not trained "
                         "on them")
    cfg = model.config
    packed = PackedSTDiT(in_channels=cfg.in_channels, planes=shapes, patch=cfg.patch, across=across,
                         time_window=time_window, hidden_size=cfg.hidden_size, depth=cfg.depth,
                         num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, num_classes=cfg.num_classes,
                         class_dropout=cfg.class_dropout, timestep_scale=cfg.timestep_scale,
                         gradient_checkpointing=cfg.gradient_checkpointing)
    packed.load_state_dict(model.state_dict())
    param = next(model.parameters())
    return packed.to(device=param.device, dtype=param.dtype).train(model.training)
