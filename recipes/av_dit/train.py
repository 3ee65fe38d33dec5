"""Stage 3 of AV-DiT: train the adapters on top of the frozen image DiT.

    python -m recipes.av_dit.train --config recipes/av_dit/configs/av_dit_tiny.yaml [key=value ...]

The frozen DiT comes from ``pretrained`` (a :mod:`recipes.av_dit.pretrain` run folder) or,
when ``dit_checkpoint`` is set, from an original facebookresearch/DiT checkpoint file
(``.pt`` / ``.safetensors``) built as ``dit_preset`` at the autoencoder's latent size
(:func:`avblocks.dit.dit.load_dit_checkpoint`; its classes are ImageNet's, so use
``model.class_labels=adapter``). Clips are encoded once into latents ``b z (tv + ta) h w``
(:class:`recipes.av_dit.images.ImageLatents`) and kept in memory.

Objective: the frozen DiT's own, DDPM epsilon prediction with linear betas over 1000 steps
(adapters must fit the noise levels the backbone knows; flow matching would ask a frozen
epsilon model to predict velocities). One step per clip, shared by its video frames and
audio images (joint generation). The loss is the mean of the video-frame MSE and the
audio-image MSE (``audio_weight`` x the latter; a clip has 4x more frames than audio images,
so a plain mean would mostly train the video). Labels are dropped with
``model.class_dropout`` for classifier-free guidance.

Only adapter parameters reach the optimizer and the EMA (:mod:`recipes.av_dit.trainer`); the
frozen weights stay bit-identical. The run prints the trainable / total parameter counts.

Writes ``run.output_dir``: ``config.yaml``, ``checkpoints/`` (atomic, exact resume),
``log.jsonl``, ``model/`` (EMA adapters + frozen DiT, ``AVDiT.from_pretrained``),
``adapters.safetensors`` (the trainable weights alone) and ``parameters.json``.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avblocks.dit.adapter_io import save_adapters
from avblocks.dit.av_dit import AVDiT
from avblocks.dit.dit import DiT, load_dit_checkpoint
from recipes.av_dit.images import ImageLatents
from recipes.av_dit.pretrain import DDPMConfig, build_ddpm
from recipes.av_dit.trainer import (
    OptimConfig,
    RunConfig,
    need,
    train_module,
    validate_common,
)
from recipes.common import distributed as dist_utils
from recipes.common.loop import run_entry_point, start_run


@dataclass
class AdapterConfig:
    lora_targets: tuple[str, ...] = ("blocks.*.attn.qkv", "blocks.*.attn.proj")
    lora_rank: int = 8
    lora_alpha: float = 8.0
    bottleneck: int = 0
    fusion_every: int = 2
    class_labels: str = "pretrained"
    class_dropout: float = 0.1


@dataclass
class AVDiTRecipe:
    autoencoder: str = "outputs/av_dit_autoencoder"
    pretrained: str = "outputs/av_dit_pretrain"
    dit_checkpoint: str | None = None  # an original DiT file; overrides `pretrained`
    dit_preset: str = "DiT-XL/2"  # the architecture of `dit_checkpoint`
    audio_weight: float = 1.0
    model: AdapterConfig = field(default_factory=AdapterConfig)
    diffusion: DDPMConfig = field(default_factory=DDPMConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=16, lr=1e-3))
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/av_dit"))


def validate(cfg: AVDiTRecipe, *, world_size: int = 1) -> None:
    validate_common(cfg.optim, cfg.run, world_size=world_size)
    m = cfg.model
    need(m.class_labels in ("pretrained", "adapter"),
         f"model.class_labels ({m.class_labels!r}) must be 'pretrained' or 'adapter'")
    need(cfg.dit_checkpoint is None or m.class_labels == "adapter",
         "an original DiT checkpoint has ImageNet classes: set model.class_labels=adapter")
    need(0.0 <= m.class_dropout < 1.0, f"model.class_dropout ({m.class_dropout}) must lie in [0, 1)")
    need(m.lora_rank >= 1, f"model.lora_rank ({m.lora_rank}) must be >= 1")
    need(cfg.audio_weight >= 0, f"audio_weight ({cfg.audio_weight}) must be >= 0")


def frozen_dit(cfg: AVDiTRecipe, space: ImageLatents) -> DiT:
    """The frozen backbone: a pretrain run's EMA DiT, or an original checkpoint file."""
    if cfg.dit_checkpoint is None:
        return DiT.from_pretrained(Path(cfg.pretrained) / "model")
    side, channels = space.latent_size[0], space.channels
    dit = DiT.from_preset(cfg.dit_preset, input_size=side, in_channels=channels)
    return load_dit_checkpoint(dit, cfg.dit_checkpoint)


def build_model(cfg: AVDiTRecipe, space: ImageLatents) -> AVDiT:
    dit = frozen_dit(cfg, space)
    if space.latent_size != (dit.input_size, dit.input_size) or space.channels != dit.in_channels:
        raise ValueError(f"the DiT takes {dit.in_channels} x {dit.input_size} x {dit.input_size} latents, the "
                         f"autoencoder gives {space.channels} x {space.latent_size[0]} x {space.latent_size[1]}")
    m, classes = cfg.model, space.data.num_classes
    model = AVDiT(dit=dit.config, video_frames=space.images.num_frames, audio_images=space.images.audio_images,
                  lora_targets=tuple(m.lora_targets), lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
                  bottleneck=m.bottleneck, fusion_every=m.fusion_every, class_labels=m.class_labels,
                  num_clip_classes=classes, audio_label_offset=classes if m.class_labels == "pretrained" else 0,
                  class_dropout=m.class_dropout)
    model.load_frozen(dit)
    return model


def split_losses(pred: torch.Tensor, target: torch.Tensor, frames: int, audio_weight: float) -> dict:
    err = (pred - target).square()
    video, audio = err[:, :, :frames].mean(), err[:, :, frames:].mean()
    return {"video": video, "audio": audio, "total": (video + audio_weight * audio) / (1 + audio_weight)}


def train(cfg: AVDiTRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    torch.manual_seed(cfg.run.seed)
    space = ImageLatents.from_run(cfg.autoencoder)
    cache = space.encode_dataset(space.data.dataset)
    latents, labels = cache["latents"], cache["labels"]
    model = build_model(cfg, space)
    counts = model.parameter_counts()
    if ctx.is_main:
        print(f"AV-DiT parameters: {counts['trainable']:,} trainable of {counts['total']:,} "
              f"({100 * counts['trainable_share']:.2f}%); frozen DiT {counts['frozen']:,}")
    ddpm = build_ddpm(cfg.diffusion)
    frames = space.images.num_frames

    def micro_step(index: list[int], step: int, net) -> dict[str, torch.Tensor]:
        x0, y = latents[index], labels[index]
        t = ddpm.sample_timesteps(x0.shape[0])
        noise = torch.randn_like(x0)
        pred = net(ddpm.q_sample(x0, t, noise), t, y)
        return split_losses(pred, ddpm.target(x0, noise, t), frames, cfg.audio_weight)

    fitted, ema = train_module(model, desc="AV-DiT adapters", out=out, ctx=ctx, optim=cfg.optim, run=cfg.run,
                               num_items=len(latents), micro_step=micro_step)
    dist_utils.barrier()
    ema.copy_to(model)
    result = fitted.summary() | {"parameters": counts}
    if ctx.is_main:
        model.save_pretrained(out / "model")
        save_adapters(model, out / "adapters.safetensors")
        (out / "parameters.json").write_text(json.dumps(counts, indent=2))
    dist_utils.barrier()
    return result


def load_run(run_dir: str | Path) -> tuple[AVDiTRecipe, ImageLatents, AVDiT]:
    """``(config, latent space, trained model in eval mode)`` of a finished run."""
    from recipes.common.config import load_config

    run_dir = Path(run_dir)
    cfg = load_config(AVDiTRecipe, run_dir / "config.yaml")
    return cfg, ImageLatents.from_run(cfg.autoencoder), AVDiT.from_pretrained(run_dir / "model").eval()


def main(argv=None) -> dict:
    return run_entry_point(AVDiTRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
