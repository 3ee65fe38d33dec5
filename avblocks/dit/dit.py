"""The image DiT of facebookresearch/DiT (Peebles & Xie, 2023), with its exact state-dict layout.

AV-DiT starts from a frozen, image-pretrained DiT-XL/2; this module is that network, built
from avblocks' blocks but with DiT's parameter names and shapes, so an original checkpoint
loads by its own keys and reproduces the original outputs to fp32 tolerance::

    x_embedder.proj.{weight,bias}                 Conv2d(in_channels, D, p, stride p)
    t_embedder.mlp.{0,2}.{weight,bias}            Linear(256, D), SiLU, Linear(D, D)
    y_embedder.embedding_table.weight             (num_classes + 1, D): row num_classes = null
    pos_embed                                     (1, N, D) fixed 2D sin-cos, N = (input/p)^2
    blocks.{i}.attn.qkv / attn.proj               Linear(D, 3D) / Linear(D, D)
    blocks.{i}.mlp.fc1 / mlp.fc2                  Linear(D, r D) / Linear(r D, D)
    blocks.{i}.adaLN_modulation.1                 Linear(D, 6D)
    final_layer.linear                            Linear(D, p*p*out_channels)
    final_layer.adaLN_modulation.1                Linear(D, 2D)

Choices (each one is DiT's unless it says otherwise):

- constructor arguments carry DiT's own names and defaults (``input_size=32, patch_size=2,
  in_channels=4, hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0,
  class_dropout_prob=0.1, num_classes=1000, learn_sigma=True``); presets ``DiT-{S,B,L,XL}/{2,4,8}``
  in :data:`DIT_PRESETS` / :meth:`DiT.from_preset`;
- ``t`` is DiT's raw diffusion step (integer or float, 0..999 for its DDPM), embedded without
  any scaling (unlike :class:`~avblocks.dit.stdit.STDiT`, which scales flow-matching times);
- ``learn_sigma`` doubles the output channels (``eps`` then the variance interpolation ``v``);
- ``pos_embed`` is a ``requires_grad=False`` :class:`~torch.nn.Parameter` as in the original,
  so it is in the state dict (and counted by ``count_parameters`` as a frozen parameter). It
  is DiT's table (:func:`~avblocks.attention.positional.dit_sincos_2d`: columns in the first
  half of the channels, rows in the second), so ``hidden_size`` must be divisible by 4;
- other latent sizes: the model is built for its own ``input_size``; when
  :func:`load_dit_checkpoint` meets a ``pos_embed`` of another grid size (e.g. a 256x256
  checkpoint, 32x32 latents, loaded into an ``input_size=16`` model) it ignores the saved
  table and keeps the model's own sin-cos table, which is exactly what DiT would have built
  for that size. Every other weight is independent of the grid size;
- label dropout (classifier-free guidance training) follows ``self.training`` as in DiT;
- :meth:`DiT.forward_with_cfg` is the original's, including its quirk of guiding only the
  first 3 channels (``eps`` of 3 of the 4 latent channels; the original keeps it for
  reproducibility of its reported numbers);
- initialisation is DiT's ``initialize_weights`` (:meth:`DiT.initialize_weights`): every
  Linear xavier-uniform with zero bias, the patch kernel xavier-uniform on its flattened view,
  the label table and both timestep-MLP weights normal(std 0.02), every adaLN Linear and the
  final Linear zero: a fresh model predicts exactly 0.
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Int, Real
from safetensors import safe_open
from torch import nn

from avblocks.attention.positional import dit_sincos_2d
from avblocks.dit.blocks import DiTBlock, FinalLayer
from avblocks.dit.embedders import LabelEmbedder, TimestepEmbedder
from avblocks.dit.patch import PatchEmbed2d
from avblocks.saveload import CheckpointError, SaveLoadMixin, load_state_dict_strict, reading
from avblocks.typing import TYPECHECK, Float, Tensor, shapecheck

__all__ = ["DiTConfig", "DiT", "DIT_PRESETS", "load_dit_checkpoint", "read_dit_state_dict"]

# Module-level aliases: a one-word shape string inside an annotation reads as a forward
# reference to pyflakes (F821).
Steps = Real[Tensor, "b"]
Labels = Int[Tensor, "b"]

DIT_PRESETS: dict[str, dict[str, int]] = {
    f"DiT-{size}/{patch}": dict(depth=depth, hidden_size=width, num_heads=heads, patch_size=patch)
    for size, (depth, width, heads) in {
        "S": (12, 384, 6),
        "B": (12, 768, 12),
        "L": (24, 1024, 16),
        "XL": (28, 1152, 16),
    }.items()
    for patch in (2, 4, 8)
}
"""DiT's twelve configurations (``DiT-XL/2`` ... ``DiT-S/8``): depth, width, heads, patch."""


@dataclass
class DiTConfig:
    """Constructor arguments of :class:`DiT`, with facebookresearch/DiT's names and defaults
    (DiT-XL/2 on 32x32 latents of 4 channels, 1000 ImageNet classes)."""

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True


class DiT(SaveLoadMixin, nn.Module):
    """Class-conditional image DiT: ``(x b c h w, t b, y b) -> b out_c h w`` (DiT's layout).

    See the module docstring for the parameter layout and every choice.

    Args:
        input_size: latent side (height = width) the model is built for.
        patch_size: patch side ``p``; must divide ``input_size``.
        in_channels: latent channels.
        hidden_size: token width ``D`` (divisible by ``num_heads`` and by 4).
        depth: number of :class:`~avblocks.dit.blocks.DiTBlock`.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``D``.
        class_dropout_prob: label-dropout probability in training; ``> 0`` adds the null class.
        num_classes: real classes; the null label is ``num_classes``.
        learn_sigma: output ``2 * in_channels`` channels (noise and variance) instead of
            ``in_channels``.
    """

    config_class = DiTConfig

    def __init__(
        self,
        *,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("input_size", input_size),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
            ("depth", depth),
        ):
            if value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1")
        if input_size % patch_size:
            raise ValueError(
                f"input_size ({input_size}) must be divisible by patch_size ({patch_size})"
            )
        if hidden_size < 1 or num_heads < 1 or hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a positive multiple of num_heads ({num_heads})"
            )
        if hidden_size % 4:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by 4 (2D sin-cos position table)"
            )
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.learn_sigma = learn_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.grid = input_size // patch_size

        self.x_embedder = PatchEmbed2d(
            in_channels=in_channels, hidden_size=hidden_size, patch_size=patch_size
        )
        self.t_embedder = TimestepEmbedder(hidden_size=hidden_size)
        self.y_embedder = LabelEmbedder(
            num_classes=num_classes, hidden_size=hidden_size, dropout_prob=class_dropout_prob
        )
        # A frozen Parameter (not a buffer) because the original is one: it is in DiT's
        # state dict, so checkpoints carry it and strict loading expects it.
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.grid * self.grid, hidden_size), requires_grad=False
        )
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio)
            for _ in range(depth)
        )
        self.final_layer = FinalLayer(
            hidden_size=hidden_size, patch_dim=patch_size * patch_size * self.out_channels
        )
        self.initialize_weights()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "DiT":
        """``DiT.from_preset("DiT-XL/2", input_size=32, num_classes=1000)``: a preset of
        :data:`DIT_PRESETS` with any constructor argument overridden."""
        if name not in DIT_PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; known: {sorted(DIT_PRESETS)}")
        return cls(**{**DIT_PRESETS[name], **overrides})

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """DiT's ``initialize_weights`` (see the module docstring); also rebuilds ``pos_embed``."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.pos_embed.copy_(self.sincos_table())
        kernel = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(kernel.view(kernel.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for ada in [block.adaLN_modulation[1] for block in self.blocks] + [
            self.final_layer.adaLN_modulation[1],
            self.final_layer.linear,
        ]:
            nn.init.zeros_(ada.weight)
            nn.init.zeros_(ada.bias)

    def sincos_table(self) -> Float[Tensor, "1 n d"]:
        """The fixed position table DiT builds for this model's grid, ``1 x N x D`` (float32)."""
        table = dit_sincos_2d(self.hidden_size, self.grid)
        return table.unsqueeze(0).to(self.pos_embed.device)

    @property
    def null_label(self) -> int:
        """The label that means "no class" (classifier-free guidance): ``num_classes``."""
        return self.y_embedder.null_class

    @property
    def num_tokens(self) -> int:
        """Tokens per image, ``(input_size / patch_size)^2``."""
        return self.grid * self.grid

    def _check_inputs(self, x: Tensor, y: Tensor) -> None:
        expected = (self.in_channels, self.input_size, self.input_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x has shape {tuple(x.shape)}, expected b c h w = (b, "
                f"{', '.join(map(str, expected))}) (the model's in_channels and input_size; "
                "build the model with the input_size of your latents)"
            )
        # Value check costs a host sync: only in eager mode with shape checks on.
        if TYPECHECK and not torch.compiler.is_compiling():
            rows = self.y_embedder.embedding_table.num_embeddings
            if bool(((y < 0) | (y >= rows)).any()):
                raise ValueError(f"labels {y.tolist()} out of range: valid are 0..{rows - 1}")

    def embed(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b n d"]:
        """Patch tokens plus the position table: ``x_embedder(x) + pos_embed``."""
        return self.x_embedder(x) + self.pos_embed.to(x.dtype)

    def condition(self, t: Steps, y: Labels) -> Float[Tensor, "b d"]:
        """``t_embedder(t) + y_embedder(y)`` (labels dropped as DiT when training)."""
        return self.t_embedder(t) + self.y_embedder(y, train=self.training)

    def unpatchify(self, tokens: Float[Tensor, "b n pd"]) -> Float[Tensor, "b c h w"]:
        """``b (h w) (p q c) -> b c (h p) (w q)``, DiT's ``unpatchify``."""
        p = self.patch_size
        return rearrange(tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid, p=p, q=p)

    def forward_blocks(
        self, tokens: Float[Tensor, "b n d"], c: Float[Tensor, "b d"]
    ) -> Float[Tensor, "b n d"]:
        """The block stack alone: the one place step caches (``avblocks.dit.cache``) hook into."""
        for block in self.blocks:
            tokens = block(tokens, c)
        return tokens

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b c h w"], t: Steps, y: Labels
    ) -> Float[Tensor, "b co h w"]:
        """DiT's prediction: ``eps`` (and, with ``learn_sigma``, the variance values) for ``x``.

        ``t``: diffusion step per sample (no scaling); ``y``: labels, :attr:`null_label` for
        the unconditional branch of classifier-free guidance.
        """
        self._check_inputs(x, y)
        tokens = self.embed(x)
        c = self.condition(t, y).to(tokens.dtype)
        tokens = self.forward_blocks(tokens, c)
        return self.unpatchify(self.final_layer(tokens, c))

    @shapecheck
    def forward_with_cfg(
        self, x: Float[Tensor, "b c h w"], t: Steps, y: Labels, cfg_scale: float
    ) -> Float[Tensor, "b co h w"]:
        """DiT's classifier-free guidance forward, as the original.

        The batch is ``[conditional half, unconditional half]`` (``y`` of the second half is
        usually :attr:`null_label`); only ``x[: b // 2]`` is used, duplicated. The first 3
        output channels are guided, ``uncond + cfg_scale * (cond - uncond)``, and the result
        is written to both halves; the remaining channels are returned unguided.
        """
        if x.shape[0] % 2:
            raise ValueError(f"forward_with_cfg needs an even batch, got {x.shape[0]}")
        half = x[: x.shape[0] // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        eps, rest = out[:, :3], out[:, 3:]
        cond_eps, uncond_eps = torch.split(eps, eps.shape[0] // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)


def read_dit_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, Tensor]:
    """Read a DiT state dict from a local file, never executing pickled code.

    - ``.safetensors``: read with :mod:`safetensors`;
    - ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``: ``torch.load(..., weights_only=True)``. DiT's
      ``train.py`` saves ``{"model", "ema", "opt", "args"}`` where ``args`` is an
      ``argparse.Namespace``: that one class is allowed to unpickle (it only holds plain
      values); anything else non-tensor is refused by ``weights_only``.

    A dict that wraps the weights is unwrapped: ``key`` if given, else ``"ema"`` (what DiT's
    ``sample.py`` loads), else ``"model"``; a flat ``{name: tensor}`` dict is returned as is.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        with reading(path), safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    if path.suffix not in {".pt", ".pth", ".bin", ".ckpt"}:
        raise CheckpointError(
            f"{path}: unknown checkpoint suffix {path.suffix!r} (expected .pt, .pth, .bin, "
            ".ckpt or .safetensors)"
        )
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError and friends: say which file and why
            raise CheckpointError(f"{path} cannot be loaded with weights_only=True: {e}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state dict")
    if key is not None:
        if key not in payload:
            raise CheckpointError(f"{path} has no entry {key!r}; entries: {sorted(payload)}")
        payload = payload[key]
        if not isinstance(payload, dict):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(payload).__name__}, not a state dict")
    elif not all(isinstance(v, Tensor) for v in payload.values()):
        for candidate in ("ema", "model"):
            if isinstance(payload.get(candidate), dict):
                payload = payload[candidate]
                break
        else:
            raise CheckpointError(
                f"{path} is neither a state dict nor a dict with 'ema' or 'model'; "
                f"entries: {sorted(payload)}"
            )
    not_tensors = sorted(k for k, v in payload.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: entries {not_tensors} are not tensors")
    return dict(payload)


def load_dit_checkpoint(
    model: DiT, path: str | os.PathLike, *, key: str | None = None
) -> DiT:
    """Load an original facebookresearch/DiT checkpoint (local file) into ``model``, strictly.

    The file is read by :func:`read_dit_state_dict` (``.pt`` / ``.pth`` with
    ``weights_only=True``, plain or wrapped under ``"ema"`` / ``"model"`` as DiT's
    ``train.py`` saves; or ``.safetensors``). Every key must be present with its shape; a
    :class:`~avblocks.saveload.CheckpointError` names every missing key, unexpected key and
    shape mismatch, and nothing is copied then. One exception: a ``pos_embed`` of another
    grid size (``(1, N', D)`` with ``N' != N``) is not an error: it is dropped and the
    model keeps its own sin-cos table for its ``input_size`` (DiT's table is a fixed
    function of the grid, so this is what the original would use at that size). Tensors are
    cast to the model's dtype. Returns ``model``.
    """
    state = read_dit_state_dict(path, key=key)
    saved_pos = state.get("pos_embed")
    own_pos = model.pos_embed
    if (
        saved_pos is not None
        and saved_pos.ndim == 3
        and saved_pos.shape[0] == 1
        and saved_pos.shape[2] == own_pos.shape[2]
        and saved_pos.shape[1] != own_pos.shape[1]
    ):
        state = {**state, "pos_embed": model.sincos_table().to(own_pos.dtype)}
    load_state_dict_strict(model, state, source=str(path))
    return model
