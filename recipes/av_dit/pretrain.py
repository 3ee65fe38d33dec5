"""Stage 2 of AV-DiT: the frozen image DiT, pretrained here on single images (or skip this stage).

    python -m recipes.av_dit.pretrain --config recipes/av_dit/configs/pretrain_tiny.yaml [key=value ...]

AV-DiT freezes a DiT-XL/2 pretrained on ImageNet. With no network and no downloaded weights,
the synthetic set needs a stand-in: a small class-conditional image :class:`~avblocks.dit.dit.DiT`
(facebookresearch/DiT's layout and objective) trained on *single images* of the training set,
never on clips, so nothing about time or about audio-video pairing can be learned here. What
the adapters stage then has to learn (motion, sync) is what ImageNet pretraining also lacks.
With a real checkpoint, skip this stage and give ``train.py`` ``dit_checkpoint=...``.

Choices:

- Images: each training item is one image of a clip, an audio spectrogram image with
  probability ``p_audio`` (default 0.5) and a video frame otherwise (uniform among them); so
  both kinds are seen equally often although a clip has 4x more frames.
- Classes: ``2 K`` image classes for ``K`` clip classes: a video frame of clip class ``k`` is
  image class ``k``, a spectrogram image of it is class ``K + k``. The class tells the DiT which
  kind of image to draw (as ImageNet classes do); the adapters stage reuses the table
  (``audio_label_offset = K``). Label dropout ``class_dropout_prob`` trains the null class for
  classifier-free guidance, as DiT.
- Objective: DiT's: DDPM, linear betas 1e-4..0.02 over 1000 steps, epsilon prediction, MSE
  (:class:`avblocks.diffusion.DDPM`). With ``learn_sigma`` the model has DiT's extra variance
  channels but only the epsilon half is trained (the VLB term is not implemented), so the
  default here is ``learn_sigma = False``.

Writes ``run.output_dir``: ``config.yaml``, ``checkpoints/``, ``log.jsonl``, ``model/`` (EMA
weights as ``config.json + model.safetensors``: ``DiT.from_pretrained`` loads it).
"""

from dataclasses import dataclass, field

import torch

from avblocks.diffusion import DDPM
from avblocks.dit.dit import DiT
from recipes.av_dit.images import ImageLatents
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
class ImageDiTConfig:
    patch_size: int = 2
    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    learn_sigma: bool = False


@dataclass
class DDPMConfig:
    schedule: str = "linear"
    num_timesteps: int = 1000


@dataclass
class PretrainRecipe:
    autoencoder: str = "outputs/av_dit_autoencoder"
    p_audio: float = 0.5
    model: ImageDiTConfig = field(default_factory=ImageDiTConfig)
    diffusion: DDPMConfig = field(default_factory=DDPMConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=64))
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/av_dit_pretrain"))


def validate(cfg: PretrainRecipe, *, world_size: int = 1) -> None:
    validate_common(cfg.optim, cfg.run, world_size=world_size)
    m = cfg.model
    need(m.hidden_size % m.num_heads == 0,
         f"model.num_heads ({m.num_heads}) must divide model.hidden_size ({m.hidden_size})")
    need(m.hidden_size % 4 == 0, f"model.hidden_size ({m.hidden_size}) must be divisible by 4")
    need(0.0 <= cfg.p_audio <= 1.0, f"p_audio ({cfg.p_audio}) must lie in [0, 1]")
    need(0.0 < m.class_dropout_prob < 1.0,
         f"model.class_dropout_prob ({m.class_dropout_prob}) must lie in (0, 1): guidance needs the null class")


def build_dit(cfg: PretrainRecipe, space: ImageLatents) -> DiT:
    m = cfg.model
    side = space.latent_size[0]
    if space.latent_size[0] != space.latent_size[1]:
        raise ValueError(f"DiT needs square latents, got {space.latent_size}")
    if side % m.patch_size:
        raise ValueError(f"model.patch_size ({m.patch_size}) must divide the latent side ({side})")
    return DiT(input_size=side, patch_size=m.patch_size, in_channels=space.channels, hidden_size=m.hidden_size,
               depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
               class_dropout_prob=m.class_dropout_prob, num_classes=2 * space.data.num_classes,
               learn_sigma=m.learn_sigma)


def build_ddpm(cfg: DDPMConfig) -> DDPM:
    return DDPM(schedule=cfg.schedule, num_timesteps=cfg.num_timesteps, prediction="epsilon")


def epsilon(dit: torch.nn.Module, channels: int):
    """``model(x, t, y)`` -> the epsilon half of a DiT's output (all of it without ``learn_sigma``)."""
    return lambda x, t, y: dit(x, t, y)[:, :channels]


def pick_images(latents: torch.Tensor, labels: torch.Tensor, frames: int, num_classes: int,
                p_audio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One image per clip: ``(b z h w, image labels b)`` (see the module docstring)."""
    b, n = latents.shape[0], latents.shape[2]
    audio = torch.rand(b) < p_audio
    frame = (torch.rand(b) * frames).long()
    audio_image = frames + (torch.rand(b) * (n - frames)).long()
    index = torch.where(audio, audio_image, frame)
    images = latents[torch.arange(b), :, index]
    return images, labels + num_classes * audio.long()


def train(cfg: PretrainRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    torch.manual_seed(cfg.run.seed)
    space = ImageLatents.from_run(cfg.autoencoder)
    cache = space.encode_dataset(space.data.dataset)
    latents, labels = cache["latents"], cache["labels"]
    model = build_dit(cfg, space)
    ddpm = build_ddpm(cfg.diffusion)
    frames, classes = space.images.num_frames, space.data.num_classes

    def micro_step(index: list[int], step: int, net) -> dict[str, torch.Tensor]:
        x0, y = pick_images(latents[index], labels[index], frames, classes, cfg.p_audio)
        return {"total": ddpm.loss(epsilon(net, space.channels), x0, model_kwargs={"y": y})}

    fitted, ema = train_module(model, desc="image DiT", out=out, ctx=ctx, optim=cfg.optim, run=cfg.run,
                               num_items=len(latents), micro_step=micro_step)
    dist_utils.barrier()
    ema.copy_to(model)
    if ctx.is_main:
        model.save_pretrained(out / "model")
    dist_utils.barrier()
    return fitted.summary()


def main(argv=None) -> dict:
    return run_entry_point(PretrainRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
