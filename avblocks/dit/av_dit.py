"""AV-DiT: one frozen image DiT denoises video frames and spectrogram images; adapters train.

Input: the latent of a clip, ``b z (tv + ta) h w`` (:class:`avblocks.codecs.ImageLatentCodec`:
``tv`` video frames, then ``ta`` audio spectrogram images, every one encoded by the same
per-frame image autoencoder), DDPM steps ``t`` (``b``, or ``b (tv + ta)`` per image) and clip
labels ``y`` (``b``). Output: the predicted noise, same shape as the input (epsilon only; the
learned-variance channels of a ``learn_sigma`` DiT are dropped).

Per image, the frozen DiT's own embedders run (``x_embedder`` + ``pos_embed``, ``t_embedder``,
``y_embedder``); then, for every DiT block ``i``::

    video (b tv n d) = AdaptedDiTBlock(block_i, temporal_i[, bottleneck_i])  LoRA off
    audio (b ta n d) = block_i on every audio image                          LoRA on
    after every ``fusion_every``-th block:  video, audio = fusion(video, audio)

and the frozen ``final_layer`` / ``unpatchify`` per image.

Trainable (all zero-initialised, so a fresh AV-DiT computes exactly the frozen DiT on every
image): per block a :class:`~avblocks.dit.adapters.TemporalAdapter` (video), LoRA on the
``lora_targets`` Linears of the shared DiT (rank ``lora_rank``; active on the audio branch only,
:func:`~avblocks.dit.lora.lora_disabled` around the video branch), optional bottleneck
adapters (video), and **one** :class:`~avblocks.dit.adapters.AVFusionBlock` whose weights are
shared by every fusion point (AV-DiT's single extra fusion block).

Choices (the paper leaves them open or they are ours):

- The adapted blocks are views over the frozen blocks and the adapters; they are kept out of
  the module tree, so every parameter has one name: ``dit.*`` exactly as
  facebookresearch/DiT names it (plus ``...lora_A/lora_B``), ``temporal.{i}.*``,
  ``bottleneck.{i}.*``, ``fusion.*``.
- Class labels, ``class_labels``:

  * ``"pretrained"`` (for the DiT of :mod:`recipes.av_dit.pretrain`): the frozen label
    table; video frames get image class ``y``, audio images ``y + audio_label_offset``;
  * ``"adapter"`` (for an ImageNet DiT, whose classes mean nothing here): every image gets the
    frozen null-class embedding plus a new trainable table of ``num_clip_classes`` (+ null)
    rows, zero-initialised (so the start is the unconditional frozen DiT).

  In both, label dropout (probability ``class_dropout``, training only) replaces the clip's
  label by the null label ``dit.null_label`` for both modalities at once, so
  :class:`~avblocks.diffusion.ClassifierFreeGuidance` with ``null_label=model.null_label``
  guides the pair.
- Audio images get no temporal adapter: their only cross-image path is the fusion block
  (whose sin-cos frame codes put audio image ``j`` at the centre of the video frames it
  covers).
- Gradient checkpointing (``model.gradient_checkpointing = True``, a run-time switch, not
  part of the config): each layer (the adapted video block, the audio block and the fusion
  after it) is recomputed in the backward whenever gradients are enabled. It has to be the
  layer: the video path runs the frozen blocks through views outside the module tree, which
  a per-block switch such as :func:`avblocks.dit.compile.checkpoint_blocks` does not reach.
"""

from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from jaxtyping import Real
from torch import nn
from torch.utils.checkpoint import checkpoint

from avblocks.dit.adapter_io import count_parameters, freeze
from avblocks.dit.adapters import (
    AdaptedDiTBlock,
    AVFusionBlock,
    BottleneckAdapter,
    TemporalAdapter,
)
from avblocks.dit.dit import DiT, DiTConfig
from avblocks.dit.embedders import LabelEmbedder
from avblocks.dit.lora import LoRALinear, add_lora, lora_disabled
from avblocks.saveload import CheckpointError, SaveLoadMixin
from avblocks.typing import Float, Int, Tensor, shapecheck

ClassLabels = Literal["pretrained", "adapter"]
# Module-level aliases: a one-word shape string in an annotation reads as a name to pyflakes.
Steps = Real[Tensor, "b *images"]
Labels = Int[Tensor, "b"]


@dataclass
class AVDiTConfig:
    dit: DiTConfig = field(default_factory=DiTConfig)
    video_frames: int = 16
    audio_images: int = 4
    lora_targets: tuple[str, ...] = ("blocks.*.attn.qkv", "blocks.*.attn.proj")
    lora_rank: int = 8
    lora_alpha: float = 8.0
    bottleneck: int = 0
    fusion_every: int = 2
    class_labels: ClassLabels = "pretrained"
    num_clip_classes: int = 4
    audio_label_offset: int = 4
    class_dropout: float = 0.1


class AVDiT(SaveLoadMixin, nn.Module):
    """Frozen image DiT + trainable adapters for joint video and audio denoising (module doc).

    Args:
        dit: the frozen DiT's config (facebookresearch/DiT's constructor arguments).
        video_frames: ``tv``, video latent frames per clip.
        audio_images: ``ta``, spectrogram images per clip.
        lora_targets: :func:`~avblocks.dit.lora.add_lora` patterns on the DiT.
        lora_rank, lora_alpha: LoRA rank and scale numerator.
        bottleneck: width of a bottleneck adapter after each video block's MLP (0: none).
        fusion_every: the shared fusion block runs after blocks ``k-1, 2k-1, ...`` (0: never).
        class_labels: ``"pretrained"`` or ``"adapter"`` (module doc).
        num_clip_classes: clip classes ``K`` (the ``"adapter"`` table's size; label range check).
        audio_label_offset: image class of an audio image = clip class + this (``"pretrained"``).
        class_dropout: probability of the null label for a training clip.
    """

    config_class = AVDiTConfig

    def __init__(
        self,
        *,
        dit: DiTConfig = DiTConfig(),  # noqa: B008 (a frozen default, copied into the config)
        video_frames: int = 16,
        audio_images: int = 4,
        lora_targets: tuple[str, ...] = ("blocks.*.attn.qkv", "blocks.*.attn.proj"),
        lora_rank: int = 8,
        lora_alpha: float = 8.0,
        bottleneck: int = 0,
        fusion_every: int = 2,
        class_labels: ClassLabels = "pretrained",
        num_clip_classes: int = 4,
        audio_label_offset: int = 4,
        class_dropout: float = 0.1,
    ):
        super().__init__()
        if video_frames < 1 or audio_images < 1:
            raise ValueError(f"video_frames ({video_frames}) and audio_images ({audio_images}) must be >= 1")
        if fusion_every < 0 or bottleneck < 0:
            raise ValueError(f"fusion_every ({fusion_every}) and bottleneck ({bottleneck}) must be >= 0")
        if class_labels not in ("pretrained", "adapter"):
            raise ValueError(f"class_labels ({class_labels!r}) must be 'pretrained' or 'adapter'")
        if not 0.0 <= class_dropout < 1.0:
            raise ValueError(f"class_dropout ({class_dropout}) must lie in [0, 1)")
        if dit.class_dropout_prob <= 0:
            raise ValueError("the DiT needs a null class (dit.class_dropout_prob > 0) for label dropout "
                             f"and guidance; got {dit.class_dropout_prob}")
        if class_labels == "pretrained" and num_clip_classes + audio_label_offset > dit.num_classes:
            raise ValueError(f"audio labels reach num_clip_classes ({num_clip_classes}) + audio_label_offset "
                             f"({audio_label_offset}) - 1, beyond the DiT's {dit.num_classes} classes")
        self.video_frames, self.audio_images = video_frames, audio_images
        self.class_labels, self.num_clip_classes = class_labels, num_clip_classes
        self.audio_label_offset, self.class_dropout = audio_label_offset, class_dropout
        self.fusion_every = fusion_every

        self.dit = freeze(DiT(**vars(dit)))
        self.lora_names = add_lora(self.dit, list(lora_targets), rank=lora_rank, alpha=lora_alpha)
        d, heads, depth = self.dit.hidden_size, self.dit.num_heads, len(self.dit.blocks)
        self.temporal = nn.ModuleList(TemporalAdapter(hidden_size=d, num_heads=heads) for _ in range(depth))
        self.bottleneck = nn.ModuleList(
            BottleneckAdapter(hidden_size=d, bottleneck=bottleneck) for _ in range(depth if bottleneck else 0))
        self.fusion = AVFusionBlock(hidden_size=d, num_heads=heads) if fusion_every else None
        self.label_adapter = (LabelEmbedder(num_classes=num_clip_classes, hidden_size=d, dropout_prob=class_dropout)
                              if class_labels == "adapter" else None)
        if self.label_adapter is not None:
            nn.init.zeros_(self.label_adapter.embedding_table.weight)
        self.gradient_checkpointing = False  # run-time switch (module docstring)
        # Views (not registered: every parameter keeps one name, see the module docstring).
        self._video_blocks = [
            AdaptedDiTBlock(block, temporal=self.temporal[i],
                            bottleneck=self.bottleneck[i] if bottleneck else None)
            for i, block in enumerate(self.dit.blocks)
        ]

    # ---- the frozen backbone ----------------------------------------------------------------

    @torch.no_grad()
    def load_frozen(self, dit: DiT) -> None:
        """Copy a trained :class:`DiT`'s weights (same config) into the frozen backbone."""
        if dit.config != self.config.dit:
            raise CheckpointError(f"DiT config {dit.config} differs from this model's {self.config.dit}")
        missing, unexpected = self.dit.load_state_dict(dit.state_dict(), strict=False)
        lora = {f"{name}.{p}" for name in self.lora_names for p in ("lora_A", "lora_B")}
        if set(missing) != lora or unexpected:
            raise CheckpointError(f"frozen DiT weights do not fit: missing {sorted(set(missing) - lora)}, "
                                  f"unexpected {sorted(unexpected)}")

    def parameter_counts(self) -> dict[str, float]:
        """Trainable and total parameter elements, and the trainable share (AV-DiT's point)."""
        trainable, total = count_parameters(self)
        groups = {"temporal": self.temporal, "bottleneck": self.bottleneck, "fusion": self.fusion,
                  "label_adapter": self.label_adapter}
        counts = {name: count_parameters(m)[0] if m is not None else 0 for name, m in groups.items()}
        counts["lora"] = sum(m.lora_A.numel() + m.lora_B.numel() for m in self.dit.modules()
                             if isinstance(m, LoRALinear))
        return {"trainable": trainable, "total": total, "frozen": total - trainable,
                "trainable_share": trainable / total, **counts}

    @property
    def null_label(self) -> int:
        return self.dit.null_label

    @property
    def num_images(self) -> int:
        return self.video_frames + self.audio_images

    # ---- forward ----------------------------------------------------------------------------

    def _conditions(self, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(video b [tv] d, audio b [ta] d)``: timestep + label embeddings per modality."""
        null = torch.full_like(y, self.null_label)
        if self.training and self.class_dropout > 0:
            y = torch.where(torch.rand(y.shape, device=y.device) < self.class_dropout, null, y)
        dropped = y == self.null_label
        table = self.dit.y_embedder
        if self.class_labels == "pretrained":
            label_v = table(y, train=False)
            label_a = table(torch.where(dropped, y, y + self.audio_label_offset), train=False)
        else:
            label_v = label_a = table(null, train=False) + self.label_adapter(
                torch.where(dropped, torch.full_like(y, self.num_clip_classes), y), train=False)
        temb = self.dit.t_embedder(t)  # b d, or b T d for per-image steps
        if t.ndim == 1:
            return temb + label_v, temb + label_a
        tv = self.video_frames
        return temb[:, :tv] + label_v[:, None], temb[:, tv:] + label_a[:, None]

    def _check(self, x: Tensor, t: Tensor, y: Tensor) -> None:
        c, size = self.dit.in_channels, self.dit.input_size
        if tuple(x.shape[1:]) != (c, self.num_images, size, size):
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (b, {c}, {self.num_images} = "
                             f"{self.video_frames} frames + {self.audio_images} audio images, {size}, {size})")
        if t.ndim == 2 and t.shape[1] != self.num_images:
            raise ValueError(f"per-image timesteps have {t.shape[1]} columns, expected {self.num_images}")
        if not torch.compiler.is_compiling():  # value check: one host sync, eager mode only
            bad = (y < 0) | ((y >= self.num_clip_classes) & (y != self.null_label))
            if bool(bad.any()):
                raise ValueError(f"labels {y.tolist()} out of range: clip classes are "
                                 f"0..{self.num_clip_classes - 1}, the null label is {self.null_label}")

    def _layer(self, i: int, video: Tensor, audio: Tensor, c_video: Tensor, c_audio: Tensor) -> tuple[Tensor, Tensor]:
        """Layer ``i``: the adapted video block (LoRA off), the audio block, then the fusion
        when one follows this layer. ``video b tv k d``, ``audio (b ta) k d``."""
        dit = self.dit
        with lora_disabled(dit):
            video = self._video_blocks[i](video, c_video)
        audio = dit.blocks[i](audio, c_audio)
        if self.fusion is not None and (i + 1) % self.fusion_every == 0:
            video, fused = self.fusion(video, rearrange(audio, "(b n) k d -> b n k d", b=video.shape[0]))
            audio = rearrange(fused, "b n k d -> (b n) k d")
        return video, audio

    @shapecheck
    def forward(
        self, x: Float[Tensor, "b z n h w"], t: Steps, y: Labels
    ) -> Float[Tensor, "b z n h w"]:
        """Predicted noise of every image (module docstring); ``t`` raw DDPM steps."""
        self._check(x, t, y)
        b, z, tv = x.shape[0], x.shape[1], self.video_frames
        dit = self.dit
        tokens = rearrange(dit.embed(rearrange(x, "b z n h w -> (b n) z h w")), "(b n) k d -> b n k d", b=b)
        c_video, c_audio = self._conditions(t, y)
        c_audio_flat = (c_audio.repeat_interleave(self.audio_images, 0) if c_audio.ndim == 2
                        else rearrange(c_audio, "b n d -> (b n) d"))
        video, audio = tokens[:, :tv], rearrange(tokens[:, tv:], "b n k d -> (b n) k d")
        for i in range(len(dit.blocks)):
            if self.gradient_checkpointing and torch.is_grad_enabled():
                video, audio = checkpoint(self._layer, i, video, audio, c_video, c_audio_flat, use_reentrant=False)
            else:
                video, audio = self._layer(i, video, audio, c_video, c_audio_flat)
        tokens = torch.cat([video, rearrange(audio, "(b n) k d -> b n k d", b=b)], dim=1)
        cond = torch.cat([c_video[:, None].expand(-1, tv, -1) if c_video.ndim == 2 else c_video,
                          c_audio[:, None].expand(-1, self.audio_images, -1) if c_audio.ndim == 2 else c_audio],
                         dim=1)
        out = dit.unpatchify(rearrange(dit.final_layer(tokens, cond), "b n k p -> (b n) k p"))
        return rearrange(out[:, :z], "(b n) z h w -> b z n h w", b=b)
