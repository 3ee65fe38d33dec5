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

from pathlib import Path

import torch

from avblocks.device import META
from avblocks.dit.dit import DiT
from recipes.av_dit.codec import encode_clips, load_codec
from recipes.av_dit.config import AutoencoderRecipe, PretrainRecipe
from recipes.av_dit.train_autoencoder import build_autoencoder
from recipes.av_dit.trainer import build_ddpm, train_module
from recipes.common import distributed as dist_utils
from recipes.common import require
from recipes.common.config import load_config
from recipes.common.data import check_batch
from recipes.common.estimates import require_model_fits
from recipes.common.loop import run_entry_point, start_run


def autoencoder_run(run_dir: str) -> tuple[AutoencoderRecipe, int, int]:
    """``(config, latent side, latent channels)`` of an autoencoder run, read from its
    ``config.yaml`` alone (the model is built on the ``meta`` device): what the later stages
    check their config against before anything is loaded."""
    config_file = Path(run_dir) / "config.yaml"
    require(config_file.is_file(), f"autoencoder ({run_dir}) must be an av_dit.train_autoencoder run "
            "folder (it has no config.yaml)")
    trained = load_config(AutoencoderRecipe, config_file)
    with META:
        autoencoder = build_autoencoder(trained)
    return trained, autoencoder.latent_size(trained.data.size, trained.data.size)[0], autoencoder.latent_channels


def validate(cfg: PretrainRecipe, *, world_size: int = 1) -> None:
    """:meth:`PretrainRecipe.validate`, then what depends on the autoencoder run: a batch its
    clips can fill, a patch that divides the latent side, and training that fits in memory."""
    cfg.validate(world_size=world_size)
    trained, side, channels = autoencoder_run(cfg.autoencoder)
    check_batch(cfg.optim.batch_size, trained.data, source="the autoencoder run's data")
    require(side % cfg.model.patch_size == 0,
            f"model.patch_size ({cfg.model.patch_size}) must divide the latent side ({side})")
    require_model_fits("model.*", lambda: build_dit(cfg, side, channels, trained.data.num_classes))


def build_dit(cfg: PretrainRecipe, side: int, channels: int, clip_classes: int) -> DiT:
    """The image DiT on ``channels x side x side`` latents, with ``2 x clip_classes`` image classes."""
    m = cfg.model
    return DiT(input_size=side, patch_size=m.patch_size, in_channels=channels, hidden_size=m.hidden_size,
               depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
               class_dropout_prob=m.class_dropout_prob, num_classes=2 * clip_classes,
               learn_sigma=m.learn_sigma)


def epsilon(dit: torch.nn.Module, channels: int):
    """``model(x, t, y)`` -> the epsilon half of a DiT's output (all of it without ``learn_sigma``)."""
    return lambda x, t, y: dit(x, t, y)[:, :channels]


def pick_images(latents: torch.Tensor, labels: torch.Tensor, frames: int, num_classes: int,
                p_audio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One image per clip: ``(b z h w, image labels b)`` (see the module docstring); the
    choice is drawn on the latents' device."""
    b, n, device = latents.shape[0], latents.shape[2], latents.device
    audio = torch.rand(b, device=device) < p_audio
    frame = (torch.rand(b, device=device) * frames).long()
    audio_image = frames + (torch.rand(b, device=device) * (n - frames)).long()
    index = torch.where(audio, audio_image, frame)
    images = latents[torch.arange(b, device=device), :, index]
    return images, labels + num_classes * audio.long()


def train(cfg: PretrainRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    torch.manual_seed(cfg.run.seed)
    codec, data = load_codec(cfg.autoencoder)
    data.config.num_workers = cfg.data.num_workers
    latents, labels = encode_clips(data, codec.to(ctx.device).encode_frames, device=ctx.device)
    model = build_dit(cfg, codec.latent_size[0], codec.channels, data.num_classes)
    ddpm = build_ddpm(cfg.diffusion)
    frames, classes = codec.num_frames, data.num_classes

    def micro_step(batch: dict[str, torch.Tensor], step: int, net) -> dict[str, torch.Tensor]:
        x0, y = pick_images(batch["latents"], batch["labels"], frames, classes, cfg.p_audio)
        return {"total": ddpm.loss(epsilon(net, codec.channels), x0, model_kwargs={"y": y})}

    fitted, ema = train_module(model, desc="image DiT", out=out, ctx=ctx, optim=cfg.optim, run=cfg.run,
                               rows={"latents": latents, "labels": labels}, micro_step=micro_step,
                               speed=cfg.model, num_workers=cfg.data.num_workers)
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
