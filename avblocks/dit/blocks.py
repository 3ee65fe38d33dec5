"""Diffusion-transformer blocks: DiT's block, the spatio-temporal ST-DiT block, the final layer.

Parameter names and shapes are facebookresearch/DiT's, so an original DiT checkpoint loads
into :class:`DiTBlock` / :class:`FinalLayer` by its own keys (``blocks.{i}.attn.qkv``,
``attn.proj``, ``mlp.fc1``, ``mlp.fc2``, ``adaLN_modulation.1``; ``final_layer.linear``,
``final_layer.adaLN_modulation.1``). Attention goes through the one entry point
:func:`avblocks.attention.dispatch.attend`, so every backend (math, sdpa, flex) applies.

Initialisation follows DiT's ``initialize_weights``: every Linear xavier-uniform with zero
bias, every adaLN Linear zero (so a fresh block is the identity), the final layer's adaLN and
output Linear zero (a fresh model predicts 0).
"""

from typing import ClassVar

import torch
from einops import rearrange
from torch import nn

from avblocks.attention.dispatch import attend
from avblocks.attention.masks import Mask
from avblocks.dit.modulation import AdaLNZero, modulate, to_tokens
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["DiTAttention", "DiTMlp", "DiTBlock", "STDiTBlock", "FinalLayer"]


def _xavier(linear: nn.Linear) -> None:
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _check_width(hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
    if hidden_size < 1 or num_heads < 1:
        raise ValueError(f"hidden_size ({hidden_size}) and num_heads ({num_heads}) must be >= 1")
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
        )
    if not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio ({mlp_ratio}) must be > 0")


class DiTAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` Linear (timm / DiT layout).

    ``qkv`` is ``Linear(d, 3d)`` whose output splits as ``(3, heads, head_dim)`` (q, k, v
    outermost, as timm's ``Attention`` that DiT uses); ``proj`` is ``Linear(d, d)``. No
    qk-norm and no dropout (DiT uses neither). The scale is ``head_dim ** -0.5``.
    """

    def __init__(self, *, hidden_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        _check_width(hidden_size, num_heads, 1.0)
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)
        _xavier(self.qkv)
        _xavier(self.proj)

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b n d"], mask: Mask | None = None
    ) -> Float[Tensor, "b n d"]:
        q, k, v = rearrange(
            self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.num_heads
        )
        out = attend(q, k, v, mask=mask)
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))


class DiTMlp(nn.Module):
    """``fc2(GELU_tanh(fc1(x)))`` with hidden width ``int(hidden_size * mlp_ratio)`` (timm's Mlp as DiT uses it)."""

    def __init__(self, *, hidden_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        inner = int(hidden_size * mlp_ratio)
        if inner < 1:
            raise ValueError(f"hidden_size ({hidden_size}) * mlp_ratio ({mlp_ratio}) must be >= 1")
        self.fc1 = nn.Linear(hidden_size, inner)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(inner, hidden_size)
        _xavier(self.fc1)
        _xavier(self.fc2)

    @shapecheck
    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        return self.fc2(self.act(self.fc1(x)))


def _layer_norm(hidden_size: int) -> nn.LayerNorm:
    # DiT: no affine parameters (adaLN supplies shift/scale), eps 1e-6.
    return nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)


class DiTBlock(nn.Module):
    """DiT block with adaLN-Zero conditioning, on tokens ``b n d`` and conditioning ``b d``.

    ``shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaLN_modulation(c)``::

        x = x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp))

    Subclasses (:class:`STDiTBlock`) add residual branches in :meth:`_build_branches` and
    count them in ``branches``; ``adaLN_modulation`` (3 vectors per branch) is built after
    every branch, so parameter order (which optimizer state follows) and seeded
    initialisation are branches first, adaLN last, in every block.

    Args:
        hidden_size: token width ``d``.
        num_heads: attention heads (must divide ``hidden_size``).
        mlp_ratio: MLP hidden width / ``d``.
    """

    branches: ClassVar[int] = 2  # attention, MLP

    def __init__(self, *, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        _check_width(hidden_size, num_heads, mlp_ratio)
        self.hidden_size = hidden_size
        self._build_branches(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.adaLN_modulation = AdaLNZero(hidden_size=hidden_size, num_vectors=3 * self.branches)

    def _build_branches(self, *, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        self.norm1 = _layer_norm(hidden_size)
        self.attn = DiTAttention(hidden_size=hidden_size, num_heads=num_heads)
        self.norm2 = _layer_norm(hidden_size)
        self.mlp = DiTMlp(hidden_size=hidden_size, mlp_ratio=mlp_ratio)

    def _attention_branch(
        self, x: Tensor, shift: Tensor, scale: Tensor, gate: Tensor, mask: Mask | None
    ) -> Tensor:
        return x + gate * self._attend_tokens(modulate(self.norm1(x), shift, scale), mask)

    def _attend_tokens(self, h: Tensor, mask: Mask | None) -> Tensor:
        """``attn`` over the tokens of ``h``; a subclass with a token grid says how."""
        return self.attn(h, mask=mask)

    def _mlp_branch(self, x: Tensor, shift: Tensor, scale: Tensor, gate: Tensor) -> Tensor:
        return x + gate * self.mlp(modulate(self.norm2(x), shift, scale))

    def attention_input(self, x: Tensor, c: Tensor) -> Tensor:
        """``modulate(norm1(x), shift_msa, scale_msa)``: what the first attention sees (TeaCache
        compares it between sampling steps), broadcast as :meth:`forward` does."""
        shift, scale = self.adaLN_modulation(c)[:2]
        return modulate(self.norm1(x), to_tokens(shift, x), to_tokens(scale, x))

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b n d"], c: Float[Tensor, "b d"], mask: Mask | None = None
    ) -> Float[Tensor, "b n d"]:
        mods = [to_tokens(v, x) for v in self.adaLN_modulation(c)]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = self._attention_branch(x, shift_msa, scale_msa, gate_msa, mask)
        return self._mlp_branch(x, shift_mlp, scale_mlp, gate_mlp)


class STDiTBlock(DiTBlock):
    """ST-DiT block on a token grid ``b t n d``: spatial attention, temporal attention, MLP.

    A :class:`DiTBlock` (its attention branch run within each frame, then its MLP branch)
    with a temporal attention branch between the two. ``t`` frames (for ProAV-DiT: the six
    stacked planes) of ``n`` tokens each. Each of the three residual branches has its own
    adaLN-Zero shift / scale / gate (9 vectors), computed per frame, so frames with
    different timesteps are modulated differently::

        x = x + gate_msa * attn(modulate(norm1(x), ...))          within each frame  (b t) n d
        x = x + gate_tmp * attn_temporal(modulate(norm_temporal(x), ...))  across frames (b n) t d
        x = x + gate_mlp * mlp(modulate(norm2(x), ...))

    Choices (ProAV-DiT publishes no code):

    - order spatial -> temporal -> MLP, each branch modulated and gated (unlike Latte /
      OpenSora, whose temporal attention is unmodulated): with per-plane timesteps the planes
      entering temporal attention sit at different noise levels, so that branch gets the
      per-frame shift/scale/gate too;
    - the adaLN vectors are ordered ``shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
      gate_mlp, shift_tmp, scale_tmp, gate_tmp``, and the spatial parts are DiTBlock's own
      (``norm1, attn, norm2, mlp``): the first ``6 d`` rows of ``adaLN_modulation.1`` and the
      spatial/MLP weights have exactly a :class:`DiTBlock`'s shapes, so an image DiT block's
      weights can initialise an ST-DiT block (temporal parts left at init: gate 0);
    - conditioning ``b d`` is expanded to ``b t d`` (a view) *before* the adaLN Linear: the
      Linear runs on ``b*t`` rows (one per frame, never one per token), and ``b d``
      conditioning gives bit-identical results to the same vector repeated over ``t``;
    - no positional information inside the block: temporal attention is equivariant to a
      permutation of the frames, so the model must add frame / plane embeddings before the
      blocks (as DiT adds its 2D sin-cos embedding). Optional ``spatial_mask`` (``n x n``)
      and ``temporal_mask`` (``t x t``, e.g. ``FrameCausalMask``) are passed to ``attend``.

    Args:
        hidden_size: token width ``d``.
        num_heads: heads of both attentions (must divide ``hidden_size``).
        mlp_ratio: MLP hidden width / ``d``.
    """

    branches: ClassVar[int] = 3  # spatial attention, MLP, temporal attention

    def _build_branches(self, *, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        super()._build_branches(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.norm_temporal = _layer_norm(hidden_size)
        self.attn_temporal = DiTAttention(hidden_size=hidden_size, num_heads=num_heads)

    def attention_input(self, x: Tensor, c: Tensor) -> Tensor:
        if x.ndim == 4 and c.ndim == 2:  # as forward: b d conditioning expanded per frame
            c = c.unsqueeze(1).expand(x.shape[0], x.shape[1], c.shape[-1])
        return super().attention_input(x, c)

    def _attend_tokens(self, h: Tensor, mask: Mask | None) -> Tensor:
        # Spatial attention, within each frame. Only the attention sees the folded view: norm,
        # modulation and gate stay on b t n d, where the per-frame vectors broadcast.
        out = self.attn(rearrange(h, "b t n d -> (b t) n d"), mask=mask)
        return rearrange(out, "(b t) n d -> b t n d", t=h.shape[1])

    @shapecheck
    def forward(
        self,
        x: Float[Tensor, "b t n d"],
        c: Float[Tensor, "b *tc d"],
        spatial_mask: Mask | None = None,
        temporal_mask: Mask | None = None,
    ) -> Float[Tensor, "b t n d"]:
        b, t, n, d = x.shape
        if c.ndim == 2:
            c = c.unsqueeze(1).expand(b, t, d)
        mods = [to_tokens(v, x) for v in self.adaLN_modulation(c)]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods[:6]
        shift_tmp, scale_tmp, gate_tmp = mods[6:]

        x = self._attention_branch(x, shift_msa, scale_msa, gate_msa, spatial_mask)

        h = modulate(self.norm_temporal(x), shift_tmp, scale_tmp)
        h = self.attn_temporal(rearrange(h, "b t n d -> (b n) t d"), mask=temporal_mask)
        x = x + gate_tmp * rearrange(h, "(b n) t d -> b t n d", b=b)

        return self._mlp_branch(x, shift_mlp, scale_mlp, gate_mlp)

    @torch.no_grad()
    def load_dit_block(self, block: DiTBlock) -> None:
        """Copy an image :class:`DiTBlock`'s weights into the spatial attention, MLP and the
        first ``6 d`` adaLN rows; zero the temporal adaLN rows (temporal branch gated off).

        Afterwards every frame is processed exactly as ``block`` would process it alone.
        """
        if block.hidden_size != self.hidden_size or block.attn.num_heads != self.attn.num_heads:
            raise ValueError(
                f"DiT block (hidden_size {block.hidden_size}, heads {block.attn.num_heads}) does "
                f"not match (hidden_size {self.hidden_size}, heads {self.attn.num_heads})"
            )
        if block.mlp.fc1.out_features != self.mlp.fc1.out_features:
            raise ValueError(
                f"DiT block MLP width {block.mlp.fc1.out_features} != {self.mlp.fc1.out_features}"
            )
        self.attn.load_state_dict(block.attn.state_dict())
        self.mlp.load_state_dict(block.mlp.state_dict())
        rows = 6 * self.hidden_size
        ada, src = self.adaLN_modulation[1], block.adaLN_modulation[1]
        ada.weight.zero_()
        ada.bias.zero_()
        ada.weight[:rows].copy_(src.weight)
        ada.bias[:rows].copy_(src.bias)


class FinalLayer(nn.Module):
    """DiT's final layer: ``linear(modulate(norm_final(x), shift, scale))``, zero-initialised.

    Maps tokens of width ``d`` to ``patch_dim`` values per token (for DiT:
    ``patch_size**2 * out_channels``, laid out ``(p q c)`` as :func:`avblocks.dit.patch.unpatchify2d`
    expects). Tokens ``b n d`` with conditioning ``b d``, or a grid ``b t n d`` with ``b d`` or
    per-frame ``b t d``. ``shift, scale = adaLN_modulation(c)`` (DiT's order).

    Args:
        hidden_size: token width ``d``.
        patch_dim: output values per token.
    """

    def __init__(self, *, hidden_size: int, patch_dim: int) -> None:
        super().__init__()
        if hidden_size < 1 or patch_dim < 1:
            raise ValueError(f"hidden_size ({hidden_size}) and patch_dim ({patch_dim}) must be >= 1")
        self.norm_final = _layer_norm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.adaLN_modulation = AdaLNZero(hidden_size=hidden_size, num_vectors=2)

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b *grid d"], c: Float[Tensor, "b *tc d"]
    ) -> Float[Tensor, "b *grid p"]:
        if x.ndim == 4 and c.ndim == 2:  # as STDiTBlock: per frame, bit-equal to b t d
            c = c.unsqueeze(1).expand(x.shape[0], x.shape[1], c.shape[-1])
        shift, scale = (to_tokens(v, x) for v in self.adaLN_modulation(c))
        return self.linear(modulate(self.norm_final(x), shift, scale))
