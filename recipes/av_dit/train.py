"""Stage 3 of AV-DiT: train the adapters on top of the frozen image DiT, and save the pipeline.

    python -m recipes.av_dit.train --config recipes/av_dit/configs/av_dit_tiny.yaml [key=value ...]

The frozen DiT comes from ``pretrained`` (a :mod:`recipes.av_dit.pretrain` run folder) or,
when ``dit_checkpoint`` is set, from an original facebookresearch/DiT checkpoint file
(``.pt`` / ``.safetensors``) built as ``dit_preset`` at the autoencoder's latent size
(:func:`avblocks.dit.dit.load_dit_checkpoint`; its classes are ImageNet's, so use
``model.class_labels=adapter``). Clips are encoded once into latents ``b z (tv + ta) h w``
(:class:`avblocks.codecs.ImageLatentCodec`, :mod:`recipes.av_dit.codec`) and kept in memory.

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
``adapters.safetensors`` (the trainable weights alone), ``parameters.json`` and
``pipeline/``: everything sampling needs in one folder (codec, denoiser, audio inverse, and
the ``diffusion`` and ``sample`` sections as its sampling defaults), so

    avblocks sample outputs/av_dit/adapters/pipeline
    AVDiTPipeline.from_pretrained("outputs/av_dit/adapters/pipeline")(labels=[0, 1]).save("clip.mp4")
"""

from pathlib import Path

import torch

from avblocks.atomic import atomic_write_json
from avblocks.codecs import ImageLatentCodec
from avblocks.diffusion.frame_noise import mixed_frame_noise
from avblocks.dit.adapter_io import save_adapters
from avblocks.dit.av_dit import AVDiT
from avblocks.dit.dit import DIT_PRESETS, DiT, DiTConfig, load_dit_checkpoint
from avblocks.pipelines import AVDiTPipeline, DDPMSampling
from recipes.av_dit.codec import encode_clips, load_codec
from recipes.av_dit.config import AVDiTRecipe
from recipes.av_dit.pretrain import autoencoder_run
from recipes.av_dit.trainer import build_ddpm, train_module
from recipes.common import distributed as dist_utils
from recipes.common.config import require
from recipes.common.data import check_batch
from recipes.common.estimates import require_model_fits
from recipes.common.loop import run_entry_point, start_run
from recipes.common.watch import Probes


def frozen_dit_config(cfg: AVDiTRecipe, side: int, channels: int) -> DiTConfig:
    """The frozen backbone's architecture, read before any weight: the pretrain run's
    ``model/config.json``, or ``dit_preset`` on ``channels x side x side`` latents."""
    if cfg.dit_checkpoint is None:
        folder = Path(cfg.pretrained) / "model"
        require((folder / "config.json").is_file(),
                f"pretrained ({cfg.pretrained}) must be an av_dit.pretrain run folder (it has no model/config.json)")
        return DiT.load_config(folder)
    require(cfg.dit_preset in DIT_PRESETS, f"dit_preset ({cfg.dit_preset!r}) must be one of {sorted(DIT_PRESETS)}")
    return DiTConfig(**{**DIT_PRESETS[cfg.dit_preset], "input_size": side, "in_channels": channels})


def frozen_dit(cfg: AVDiTRecipe, codec: ImageLatentCodec) -> DiT:
    """The frozen backbone: a pretrain run's EMA DiT, or an original checkpoint file."""
    if cfg.dit_checkpoint is None:
        return DiT.from_pretrained(Path(cfg.pretrained) / "model")
    dit = DiT.from_preset(cfg.dit_preset, input_size=codec.latent_size[0], in_channels=codec.channels)
    return load_dit_checkpoint(dit, cfg.dit_checkpoint)


def adapted(cfg: AVDiTRecipe, dit: DiTConfig, video_frames: int, audio_images: int, clip_classes: int) -> AVDiT:
    """The AV-DiT ``cfg.model`` describes around a frozen DiT of architecture ``dit``."""
    m = cfg.model
    return AVDiT(dit=dit, video_frames=video_frames, audio_images=audio_images,
                 lora_targets=tuple(m.lora_targets), lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
                 bottleneck=m.bottleneck, fusion_every=m.fusion_every,
                 fusion_frame_local=m.fusion_frame_local, frame_noise_share=m.frame_noise_share,
                 class_labels=m.class_labels, num_clip_classes=clip_classes,
                 audio_label_offset=clip_classes if m.class_labels == "pretrained" else 0,
                 class_dropout=m.class_dropout)


def build_model(cfg: AVDiTRecipe, codec: ImageLatentCodec, clip_classes: int) -> AVDiT:
    dit = frozen_dit(cfg, codec)
    if codec.latent_size != (dit.input_size, dit.input_size) or codec.channels != dit.in_channels:
        raise ValueError(f"the DiT takes {dit.in_channels} x {dit.input_size} x {dit.input_size} latents, the "
                         f"autoencoder gives {codec.channels} x {codec.latent_size[0]} x {codec.latent_size[1]}")
    model = adapted(cfg, dit.config, codec.num_frames, codec.audio_images, clip_classes)
    model.load_frozen(dit)
    return model


def validate(cfg: AVDiTRecipe, *, world_size: int = 1) -> None:
    """:meth:`AVDiTRecipe.validate`, then what depends on the earlier runs (read from their
    configs alone): a batch the autoencoder run's clips can fill, a DiT that takes its latents,
    and training that fits in memory."""
    cfg.validate(world_size=world_size)
    trained, side, channels = autoencoder_run(cfg.autoencoder)
    check_batch(cfg.optim.batch_size, trained.data, source="the autoencoder run's data")
    dit = frozen_dit_config(cfg, side, channels)
    require(dit.input_size == side and dit.in_channels == channels,
            f"the DiT takes {dit.in_channels} x {dit.input_size} x {dit.input_size} latents, the autoencoder "
            f"({cfg.autoencoder}) gives {channels} x {side} x {side}")
    require_model_fits("model.*", lambda: adapted(cfg, dit, trained.data.num_frames, trained.audio_images,
                                                  trained.data.num_classes))


def build_pipeline(cfg: AVDiTRecipe, codec: ImageLatentCodec, model: AVDiT) -> AVDiTPipeline:
    """The trained model with its codec, sampling as ``cfg.diffusion`` and ``cfg.sample`` say."""
    d, s = cfg.diffusion, cfg.sample
    sampling = DDPMSampling(schedule=d.schedule, num_timesteps=d.num_timesteps, steps=s.steps,
                            sampler=s.sampler, cfg_scale=s.cfg_scale)
    return AVDiTPipeline(codec, model, sampling=sampling)


def split_losses(pred: torch.Tensor, target: torch.Tensor, frames: int, audio_weight: float) -> dict:
    err = (pred - target).square()
    video, audio = err[:, :, :frames].mean(), err[:, :, frames:].mean()
    return {"video": video, "audio": audio, "total": (video + audio_weight * audio) / (1 + audio_weight)}


def train(cfg: AVDiTRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    torch.manual_seed(cfg.run.seed)
    codec, data = load_codec(cfg.autoencoder)
    data.config.num_workers = cfg.data.num_workers
    latents, labels = encode_clips(data, codec.to(ctx.device).encode_frames, device=ctx.device)
    model = build_model(cfg, codec, data.num_classes)
    counts = model.parameter_counts()
    if ctx.is_main:
        print(f"AV-DiT parameters: {counts['trainable']:,} trainable of {counts['total']:,} "
              f"({100 * counts['trainable_share']:.2f}%); frozen DiT {counts['frozen']:,}")
    ddpm = build_ddpm(cfg.diffusion)
    frames = codec.num_frames

    def micro_step(batch: dict[str, torch.Tensor], step: int, net) -> dict[str, torch.Tensor]:
        x0, y = batch["latents"], batch["labels"]
        t = ddpm.sample_timesteps(x0.shape[0], device=x0.device)
        noise = mixed_frame_noise(x0.shape, frames=frames, share=model.frame_noise_share, device=x0.device)
        pred = net(ddpm.q_sample(x0, t, noise), t, y)
        return split_losses(pred, ddpm.target(x0, noise, t), frames, cfg.audio_weight)

    def probes(ema) -> Probes:
        """Validation: ``micro_step``'s losses on ``run.eval_clips`` held-out clips, through the
        unwrapped model; samples: the pipeline's call on the EMA weights."""
        r, validation = cfg.run, None
        if r.eval_every > 0 and r.eval_clips > 0:
            video, audio, y = data.model_inputs(data.held_out_batch(r.eval_clips))
            with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the training stream stays as it was
                held = {"latents": codec.encode_frames(video.to(ctx.device), audio.to(ctx.device)), "labels": y.to(ctx.device)}
            validation = lambda: micro_step(held, -1, model)  # noqa: E731

        def samples():
            with ema.swapped(model):
                return build_pipeline(cfg, codec, model)(labels=torch.arange(r.samples) % data.num_classes,
                                                         seed=r.seed, progress=False)
        return Probes(validation=validation, samples=samples)

    fitted, ema = train_module(model, desc="AV-DiT adapters", out=out, ctx=ctx, optim=cfg.optim, run=cfg.run,
                               probes=probes, rows={"latents": latents, "labels": labels}, micro_step=micro_step,
                               speed=cfg.model, num_workers=cfg.data.num_workers)
    dist_utils.barrier()
    ema.copy_to(model)
    result = fitted.summary() | {"parameters": counts}
    if ctx.is_main:
        model.save_pretrained(out / "model")
        save_adapters(model, out / "adapters.safetensors")
        atomic_write_json(out / "parameters.json", counts)
        build_pipeline(cfg, codec, model).save_pretrained(out / "pipeline")
    dist_utils.barrier()
    return result


def main(argv=None) -> dict:
    return run_entry_point(AVDiTRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
