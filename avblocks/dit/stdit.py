"""ST-DiT: ProAV-DiT's denoiser over the six stacked tri-plane latents ``b c f s s``.

The six 2D latents of a sounding video (video ``hw, th, tw``, then audio ``hw, th, tw``, as
:class:`avblocks.dit.plane_stack.PlaneStack` stacks them on a common ``s x s`` canvas) are
the ``f`` "frames" of one latent. Each plane is cut into ``p x q`` patches (``n = (s/p)(s/q)``
tokens per plane, tokens ``b f n d``), and ``depth`` :class:`~avblocks.dit.blocks.STDiTBlock`
alternate spatial attention (within a plane, ``n`` tokens) and temporal attention (across
the ``f`` planes at one token position), conditioned per plane by adaLN-Zero; a
:class:`~avblocks.dit.blocks.FinalLayer` maps tokens back to patches and the patches are
put back to ``b c f s s``.

Choices (ProAV-DiT publishes no code; this is the reference):

- **patch embedding**: one :class:`~avblocks.dit.patch.PatchEmbed2d` shared by all planes
  (run on ``(b f) c s s``): the planes live in the same latent space (one autoencoder
  channel layout), so one projection serves them all; what tells them apart is the plane
  embedding below;
- **rectangular patches** ``(p, q)``: in the stacked planes the rows of ``th`` / ``tw`` are
  time (one row per latent frame, aligned across the two modalities), so ``(1, s)`` patches
  make each token one frame's row of a plane: spatial attention then runs along time within
  a plane and temporal attention joins the six planes' rows of one frame. On the
  synthetic set this learns synchrony far sooner than square patches (``benchmarks/README.md``,
  "ProAV-DiT demo"); a square ``p`` is DiT's layout;
- **positions**: a fixed 2D sin-cos table over the ``(s/p) x (s/q)`` token grid in DiT's
  exact channel layout (:func:`avblocks.attention.positional.dit_sincos_2d`: first half the
  column, second half the row), the same for every plane, so the spatial branch sees
  positions as an image DiT does (an image DiT block's weights can initialise it, see
  :meth:`STDiTBlock.load_dit_block`). Kept as a non-persistent buffer (rebuilt from the
  config, never saved). Needs ``hidden_size % 4 == 0``;
- **plane embedding**: a learned ``f x d`` table ``plane_embed`` added to every token of a
  plane. The planes are six different *kinds* of thing (three projections of a video,
  three of an audio clip), not an ordered time axis, so they get free vectors rather than
  a 1D sin-cos "time" code; temporal attention is permutation-equivariant without it.
  Initialised normal(std 0.02) (timm's ViT learned-position init): small against the
  unit-scale patch tokens, but non-zero so the planes are distinguishable from step 0;
- **conditioning**: ``c = TimestepEmbedder(t * timestep_scale) + LabelEmbedder(y)``, one
  vector per plane (``b f d``). A per-sample ``t`` (``b``) is first repeated to ``b f``, so
  it gives bit-identical results to the same value given per plane; the label embedding
  (``b d``) is the same for all planes. Times are floats (e.g. flow-matching ``t`` in
  ``[0, 1]``); ``timestep_scale`` (default 1000) maps them onto the range DiT's sinusoid
  (``max_period`` 10000) was designed for. Integer DDPM steps work with
  ``timestep_scale=1``;
- **classifier-free guidance**: the label table has a null row ``num_classes``
  (:attr:`STDiT.null_label`); in training, labels are replaced by it with probability
  ``class_dropout`` (DiT's label dropout, :class:`~avblocks.dit.embedders.LabelEmbedder`).
  With ``class_dropout=0`` there is no null row and ``y == num_classes`` is an error;
- **initialisation as DiT**: xavier-uniform Linears / patch kernel, zero biases, zero adaLN
  (every block is the identity), zero final layer: a fresh model predicts exactly 0;
- **no output variance** (``learn_sigma``): the output has the input's channels;
- **gradient checkpointing** (``gradient_checkpointing=True``): each block is recomputed in
  the backward (``torch.utils.checkpoint``, non-reentrant) whenever gradients are enabled;
  outputs and gradients are the same as without;
- the padding of smaller planes on the canvas is not masked inside the model (the loss
  should ignore it with ``PlaneStack.valid_mask``); padded cells are tokens like any other.
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Int, Real
from torch import nn
from torch.utils.checkpoint import checkpoint

from avblocks.attention.positional import dit_sincos_2d
from avblocks.dit.blocks import FinalLayer, STDiTBlock
from avblocks.dit.embedders import LabelEmbedder, TimestepEmbedder
from avblocks.dit.patch import PatchEmbed2d, _as_tuple
from avblocks.saveload import SaveLoadMixin
from avblocks.typing import TYPECHECK, Float, Tensor, shapecheck

__all__ = ["STDiTConfig", "STDiT", "PlaneDenoiser"]

# Module-level aliases: a one-word shape string inside an annotation reads as a forward
# reference to pyflakes (F821).
Labels = Int[Tensor, "b"]
PlaneTimesteps = Real[Tensor, "b *planes"]


@dataclass
class STDiTConfig:
    """Constructor arguments of :class:`STDiT` (see its docstring). Defaults: DiT-S widths
    on a 6-plane ``32 x 32`` canvas of 4-channel latents, 9 classes (Landscape)."""

    in_channels: int = 4
    side: int = 32
    frames: int = 6
    patch: int | tuple[int, int] = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 9
    class_dropout: float = 0.1
    timestep_scale: float = 1000.0
    gradient_checkpointing: bool = False



class PlaneDenoiser(nn.Module):
    """What ST-DiT on a canvas (:class:`STDiT`) and on packed planes
    (:class:`~avblocks.dit.packed_stdit.PackedSTDiT`) share: the patch kernel, the plane
    embedding, the timestep / label embedders, the block stack and the final layer, built in
    this order (seeded initialisation and parameter order are the same in both, so one's
    ``state_dict`` loads into the other), per-plane conditioning and the block loop."""

    def _build(self, *, in_channels: int, planes: int, patch: tuple[int, int], hidden_size: int,
               depth: int, num_heads: int, mlp_ratio: float, num_classes: int, class_dropout: float,
               timestep_scale: float, gradient_checkpointing: bool, block: type[nn.Module]) -> None:
        for name, value in (("in_channels", in_channels), ("depth", depth)):
            if value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1")
        if hidden_size < 1 or num_heads < 1 or hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a positive multiple of num_heads ({num_heads})"
            )
        if hidden_size % 4:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by 4 (2D sin-cos position table)"
            )
        if not timestep_scale > 0:
            raise ValueError(f"timestep_scale ({timestep_scale}) must be > 0")
        self.in_channels = in_channels
        self.frames = planes
        self.patch_size = patch
        self.hidden_size = hidden_size
        self.timestep_scale = timestep_scale
        self.gradient_checkpointing = gradient_checkpointing
        self.x_embedder = PatchEmbed2d(in_channels=in_channels, hidden_size=hidden_size, patch_size=patch)
        self.plane_embed = nn.Parameter(torch.zeros(planes, hidden_size))
        nn.init.normal_(self.plane_embed, std=0.02)
        self.t_embedder = TimestepEmbedder(hidden_size=hidden_size)
        self.y_embedder = LabelEmbedder(
            num_classes=num_classes, hidden_size=hidden_size, dropout_prob=class_dropout
        )
        self.blocks = nn.ModuleList(
            block(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size=hidden_size, patch_dim=patch[0] * patch[1] * in_channels)
        # The sub-modules already initialise as DiT (xavier Linears and patch kernel, zero
        # biases, zero adaLN, zero final layer); nothing to redo here.

    @property
    def null_label(self) -> int:
        """The label that means "no class" (classifier-free guidance): ``num_classes``."""
        return self.y_embedder.null_class

    def _check_labels(self, y: Tensor) -> None:
        # Value check costs a host sync: only in eager mode with shape checks on.
        if TYPECHECK and not torch.compiler.is_compiling():
            rows = self.y_embedder.embedding_table.num_embeddings
            if bool(((y < 0) | (y >= rows)).any()):
                raise ValueError(
                    f"labels {y.tolist()} out of range: valid are 0..{rows - 1} "
                    f"({self.y_embedder.num_classes} classes"
                    + (f", null label {self.null_label})" if rows > self.y_embedder.num_classes
                       else "; no null label because class_dropout is 0)")
                )

    def condition(self, t: PlaneTimesteps, y: Labels) -> Float[Tensor, "b f d"]:
        """Per-plane conditioning ``TimestepEmbedder(t * scale) + LabelEmbedder(y)``, ``b f d``."""
        if t.ndim == 1:
            t = t[:, None].expand(t.shape[0], self.frames)
        t_emb = self.t_embedder(t.to(torch.float32) * self.timestep_scale)
        y_emb = self.y_embedder(y, train=self.training)
        return t_emb + y_emb[:, None, :]

    def forward_blocks(self, tokens: Tensor, c: Float[Tensor, "b f d"]) -> Tensor:
        """The block stack alone: the one place step caches (``avblocks.dit.cache``) hook into."""
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, c, use_reentrant=False)
            else:
                tokens = block(tokens, c)
        return tokens


class STDiT(SaveLoadMixin, PlaneDenoiser):
    """Spatio-temporal DiT on stacked planes: ``(x b c f s s, t b | b f, y b) -> b c f s s``.

    Args:
        in_channels: latent channels ``c`` (output has the same).
        side: canvas side ``s`` of every plane (must be divisible by the patch sides).
        frames: number of stacked planes ``f`` (6 for ProAV-DiT).
        patch: patch side ``p``, or ``(p, q)`` rows x columns (tokens per plane
            ``(s/p)(s/q)``). On ProAV-DiT's time planes the rows are time, so ``(1, q)``
            gives one token row per latent frame.
        hidden_size: token width ``d`` (divisible by ``num_heads`` and by 4).
        depth: number of :class:`STDiTBlock`.
        num_heads: attention heads (spatial and temporal).
        mlp_ratio: MLP hidden width / ``d``.
        num_classes: real classes; ``num_classes`` itself is the null label (CFG).
        class_dropout: label-dropout probability in training (0 = no null label).
        timestep_scale: ``t`` is multiplied by this before the sinusoidal embedding.
        gradient_checkpointing: recompute each block in the backward to save memory.
    """

    config_class = STDiTConfig

    def __init__(
        self,
        *,
        in_channels: int = 4,
        side: int = 32,
        frames: int = 6,
        patch: int | tuple[int, int] = 2,
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
        rows, cols = _as_tuple("patch", patch, 2)
        for name, value in (("side", side), ("frames", frames)):
            if value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1")
        if side % rows or side % cols:
            raise ValueError(f"side ({side}) must be divisible by patch ({patch})")
        self._build(in_channels=in_channels, planes=frames, patch=(rows, cols), hidden_size=hidden_size,
                    depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=num_classes,
                    class_dropout=class_dropout, timestep_scale=timestep_scale,
                    gradient_checkpointing=gradient_checkpointing, block=STDiTBlock)
        self.patch = patch
        self.side = side
        self.grid = (side // rows, side // cols)  # tokens per plane: rows x columns
        self.register_buffer("pos_embed", dit_sincos_2d(hidden_size, self.grid), persistent=False)

    @property
    def num_tokens(self) -> int:
        """Tokens per plane, ``(side / p) * (side / q)``."""
        return self.grid[0] * self.grid[1]

    def _check_inputs(self, x: Tensor, t: Tensor, y: Tensor) -> None:
        expected = (self.in_channels, self.frames, self.side, self.side)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x has shape {tuple(x.shape)}, expected b c f s s = (b, {', '.join(map(str, expected))})"
            )
        if t.ndim == 2 and t.shape[1] != self.frames:
            raise ValueError(
                f"per-plane t has {t.shape[1]} entries per sample, expected frames ({self.frames})"
            )
        if t.ndim > 2:
            raise ValueError(f"t must be b or b f, got shape {tuple(t.shape)}")
        self._check_labels(y)

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b c f s s"], t: PlaneTimesteps, y: Labels
    ) -> Float[Tensor, "b c f s s"]:
        """Prediction (noise / velocity / clean latent, as trained) with the shape of ``x``.

        ``t``: one diffusion time per sample (``b``) or per plane (``b f``); ``y``: labels,
        ``null_label`` for the unconditional branch of classifier-free guidance.
        """
        self._check_inputs(x, t, y)
        b, f = x.shape[0], x.shape[2]
        tokens = self.x_embedder(rearrange(x, "b c f h w -> (b f) c h w"))
        # contiguous: the embedding's view is transposed, and every norm and add of the
        # residual stream would otherwise run on strided memory (each LayerNorm copying it)
        tokens = rearrange(tokens, "(b f) n d -> b f n d", b=b).contiguous()
        tokens = tokens + self.pos_embed.to(tokens.dtype) + self.plane_embed[None, :, None, :]
        c = self.condition(t, y).to(tokens.dtype)
        tokens = self.forward_blocks(tokens, c)
        out = self.final_layer(tokens, c)  # b f n (p q c)
        return rearrange(
            out,
            "b f (h w) (p q c) -> b c f (h p) (w q)",
            f=f,
            h=self.grid[0],
            p=self.patch_size[0],
            q=self.patch_size[1],
        )
