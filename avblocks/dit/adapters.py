"""Parameter-efficient adapters for a frozen image DiT (AV-DiT, Wang et al. 2024).

AV-DiT keeps an image-pretrained DiT frozen and shared by both modalities and trains only
small additions: a temporal-attention layer per block for the video branch, low-rank
adapters (LoRA) for the audio branch, and a shared audio-visual fusion block. Every addition
here is **zero-initialised**, so a backbone with fresh adapters computes exactly what the
frozen backbone computes; training moves away from that point.

- :class:`LoRALinear` / :func:`add_lora` / :func:`merge_lora` / :func:`unmerge_lora`:
  ``y = W x + b + (alpha / rank) * B A x`` with ``B`` zero. The wrapped layer keeps the
  frozen ``weight`` / ``bias`` *under its own name* (the same Parameter objects, no copy),
  so the backbone's state-dict keys do not change (``blocks.0.attn.qkv.weight`` stays) and
  an original checkpoint still loads; the adapter adds ``...qkv.lora_A`` / ``...qkv.lora_B``;
- :class:`BottleneckAdapter`: ``x + up(GELU(down(LayerNorm(x))))`` (Houlsby-style), ``up`` zero;
- :class:`TemporalAdapter`: residual self-attention across frames at each token position,
  zero output projection, optional frame positions;
- :class:`AdaptedDiTBlock`: a frozen :class:`~avblocks.dit.blocks.DiTBlock` run on every
  frame of ``b t n d``, with the temporal adapter inserted after its attention branch and
  the bottleneck adapter after its MLP branch;
- :class:`AVFusionBlock`: bidirectional audio <-> video cross-attention, zero output
  projections;
- :func:`freeze`, :func:`count_parameters`, :func:`adapter_state_dict`,
  :func:`save_adapters`, :func:`load_adapters`: freeze a backbone, measure what trains, keep
  only the trainable weights on disk (safetensors, written atomically, loaded strictly).

What counts as "adapter weights" is decided by ``requires_grad``: freeze the backbone first
(:func:`freeze`), then add adapters (new parameters are trainable). :class:`LoRALinear`
freezes the layer it wraps itself (LoRA's point); the other adapters leave the block they
are given as it is.
"""

import contextlib
import fnmatch
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from avblocks.atomic import atomic_path
from avblocks.attention.masks import Mask
from avblocks.attention.projections import BidirectionalCrossAttention, MultiHeadAttention
from avblocks.config import check_int
from avblocks.dit.blocks import DiTBlock
from avblocks.dit.modulation import modulate, to_tokens
from avblocks.saveload import CheckpointError
from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "LoRALinear",
    "add_lora",
    "merge_lora",
    "unmerge_lora",
    "lora_disabled",
    "BottleneckAdapter",
    "TemporalAdapter",
    "AdaptedDiTBlock",
    "AVFusionBlock",
    "frame_position_embedding",
    "freeze",
    "count_parameters",
    "adapter_state_dict",
    "save_adapters",
    "load_adapters",
]


# Module-level alias: a one-word shape string inside an annotation reads as a forward
# reference to pyflakes (F821).
FramePositionsIn = Float[Tensor, "t"]


# --------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``W x + b + s * B (A x)``.

    ``s = alpha / rank``. ``A`` (``rank x in``) is initialised as ``nn.Linear`` initialises a
    weight (kaiming-uniform, ``a = sqrt(5)``), ``B`` (``out x rank``) zero, so the layer starts
    exactly as ``base``. ``weight`` and ``bias`` *are* ``base``'s Parameters (shared, not
    copied) and are set to ``requires_grad=False``; state-dict keys are ``weight``, ``bias``,
    ``lora_A``, ``lora_B``.

    :meth:`merge` adds ``s * B A`` into ``weight`` (one Linear at inference), :meth:`unmerge`
    subtracts it again (exact up to float rounding). ``enabled = False`` (see
    :func:`lora_disabled`) computes the base layer alone, merged or not: a backbone shared by
    two branches can run one branch with LoRA and the other without.

    Args:
        base: the Linear to adapt.
        rank: rank of the update.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, *, rank: int = 4, alpha: float = 4.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        check_int("rank", rank)
        if not alpha > 0:
            raise ValueError(f"alpha ({alpha}) must be > 0")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.scaling = rank, float(alpha), float(alpha) / rank
        self.register_parameter("weight", base.weight)
        self.register_parameter("bias", base.bias)
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(False)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False
        self.enabled = True

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}")

    def delta_weight(self) -> Tensor:
        """The update ``s * B A`` (``out x in``), computed in float32 at least."""
        work = torch.promote_types(self.lora_B.dtype, torch.float32)
        return (self.lora_B.to(work) @ self.lora_A.to(work)) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``weight``; the forward is then one Linear. Idempotent."""
        if not self.merged:
            self.weight.copy_(self.weight.to(torch.float32) + self.delta_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of ``weight``. Idempotent."""
        if self.merged:
            self.weight.copy_(self.weight.to(torch.float32) - self.delta_weight())
            self.merged = False

    @shapecheck
    def forward(self, x: Float[Tensor, "*batch din"]) -> Float[Tensor, "*batch dout"]:
        out = F.linear(x, self.weight, self.bias)
        if self.merged == self.enabled:  # merged and on, or unmerged and off: W is right
            return out
        delta = F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return out + delta if self.enabled else out - delta


def _lora_layers(module: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, LoRALinear)]


def add_lora(
    module: nn.Module, targets: Sequence[str], *, rank: int = 4, alpha: float = 4.0
) -> list[str]:
    """Replace the ``nn.Linear`` layers of ``module`` whose names match ``targets`` by
    :class:`LoRALinear`; returns the replaced names in module order.

    ``targets`` are :mod:`fnmatch` patterns over ``named_modules()`` names (``*`` also
    matches dots): ``"blocks.*.attn.qkv"``, ``"blocks.*.mlp.fc?"``, ``"blocks.*"`` (every
    Linear under ``blocks``). Only ``nn.Linear`` layers are candidates, so a broad pattern
    picks the Linears under it; layers already wrapped are not matched again. A pattern
    that matches no candidate raises ``ValueError`` naming it (a typo must not silently
    train nothing).
    """
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise ValueError("add_lora needs at least one target pattern")
    candidates = [(n, m) for n, m in module.named_modules() if n and type(m) is nn.Linear]
    names = [n for n, _ in candidates]
    unmatched = [p for p in targets if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        examples = names[:6]
        raise ValueError(
            f"LoRA target patterns {unmatched} matched no nn.Linear of {type(module).__name__} "
            f"(Linear layers are named like {examples}; layers already wrapped by LoRA are "
            "not matched again)"
        )
    replaced = []
    for name, linear in candidates:
        if any(fnmatch.fnmatchcase(name, p) for p in targets):
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name)
            setattr(parent, child, LoRALinear(linear, rank=rank, alpha=alpha))
            replaced.append(name)
    return replaced


def merge_lora(module: nn.Module) -> list[str]:
    """:meth:`LoRALinear.merge` every LoRA layer of ``module``; returns their names."""
    layers = _lora_layers(module)
    for _, layer in layers:
        layer.merge()
    return [n for n, _ in layers]


def unmerge_lora(module: nn.Module) -> list[str]:
    """:meth:`LoRALinear.unmerge` every LoRA layer of ``module``; returns their names."""
    layers = _lora_layers(module)
    for _, layer in layers:
        layer.unmerge()
    return [n for n, _ in layers]


@contextlib.contextmanager
def lora_disabled(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every LoRA layer of ``module`` computes its base layer alone.

    For AV-DiT's shared backbone: the audio branch runs with LoRA, the video branch in
    ``with lora_disabled(dit): ...`` sees the frozen weights. Restores the previous flags.
    """
    layers = [layer for _, layer in _lora_layers(module)]
    before = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield module
    finally:
        for layer, flag in zip(layers, before, strict=True):
            layer.enabled = flag


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
    names under ``block.`` and are not frozen here (use :func:`freeze` on the backbone).

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
        if not isinstance(block, DiTBlock):
            raise TypeError(f"AdaptedDiTBlock wraps a DiTBlock, got {type(block).__name__}")
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


# --------------------------------------------------------------------------------------------
# Freezing, counting, saving only the adapters
# --------------------------------------------------------------------------------------------


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module``; returns it.

    Does not change train/eval mode (DiT's label dropout follows ``training``; the caller
    decides) and leaves buffers alone.
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` element counts; a parameter shared by several modules counts once."""
    params = list(module.parameters())  # deduplicated by identity
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The trainable parameters of ``model`` (``requires_grad``) by their names, detached.

    Shared parameters appear once, under their first name (``named_parameters`` order).
    """
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def save_adapters(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write :func:`adapter_state_dict` to ``path`` as safetensors, atomically.

    Temporary file + fsync + rename (:func:`avblocks.atomic.atomic_path`): a crash never
    leaves a half-written file. Raises ``ValueError`` if nothing is trainable.
    """
    state = adapter_state_dict(model)
    if not state:
        raise ValueError(
            f"{type(model).__name__} has no trainable parameters: nothing to save as adapters"
        )
    tensors = {k: v.to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "avblocks-adapters"})
    return Path(path)


def load_adapters(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load adapter weights saved by :func:`save_adapters` into ``model``, strictly.

    The expected keys are ``model``'s trainable parameters (build the model, freeze the
    backbone and add the adapters as when saving). A
    :class:`~avblocks.saveload.CheckpointError` names every missing key, unexpected key and
    shape mismatch; nothing is copied then. Dtypes/devices are cast to the model's.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    params = dict(model.named_parameters())
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    mismatched = [
        f"{k}: saved {tuple(saved[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(saved))
        if saved[k].shape != expected[k].shape
    ]
    problems = [f"{label} {items}" for label, items in (
        ("missing adapter keys", missing), ("unexpected keys", unexpected),
        ("shape mismatches", mismatched)) if items]
    if problems:
        raise CheckpointError(
            f"cannot load adapters {path} into {type(model).__name__}: " + "; ".join(problems)
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)
    return model
