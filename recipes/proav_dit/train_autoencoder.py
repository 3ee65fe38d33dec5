"""Train the MDSA audio-video autoencoder.

    python -m recipes.proav_dit.train_autoencoder --config recipes/proav_dit/configs/autoencoder_tiny.yaml \
        [key=value ...]

Writes to ``run.output_dir``: ``config.yaml`` (the resolved config), ``checkpoints/`` (atomic,
last ``run.keep_checkpoints`` kept; a rerun with the same output folder resumes exactly from the
newest), ``log.jsonl`` (losses per logged step), ``model/`` (the EMA weights with the latent
scale calibrated, as ``config.json + model.safetensors``) and ``eval/`` (metrics.json,
side-by-side mp4 files and PNGs).

Losses: L1 and squared error on pixels; L1 on normalised log-mel frames; the multi-resolution spectral term on
the concatenated spectrogram; KL of the Gaussian bottleneck; and, when ``loss.adversarial > 0``,
hinge losses from a per-frame 2D and a spatio-temporal 3D patch discriminator on the video,
switched on at step ``loss.adversarial_start``.

Why squared error next to L1 on pixels: for a small moving object that covers a pixel in a few
frames only, L1's best uninformed guess is the background (the median), so a blurry, partly
right object earns nothing and training sits on a plateau that reconstructs the background
alone (measured on the synthetic set: object-pixel L1 rose from 0.60 to 0.68 over 300 steps
with L1 only; with ``pixel_mse = 4`` it fell to 0.28). Squared error rewards the partial
prediction and breaks the plateau; L1 keeps edges sharp once the object is there.

Distributed: the same command under ``torchrun --nproc_per_node N -m ...`` trains with DDP
(:mod:`recipes.common.distributed`): ``optim.batch_size`` is the global batch, each rank takes
its slice of every step's batch, ``optim.grad_accum`` cuts a rank's slice into micro-batches,
rank 0 logs and writes. Non-finite losses, gradients or weights follow ``run.on_nonfinite``
(``stop`` | ``skip`` | ``rollback``, :mod:`recipes.common.faults`). :func:`validate` checks the
cross-field constraints before anything is built.
"""

import inspect
from pathlib import Path

import torch

from avblocks.atomic import atomic_write_json
from avblocks.attention import (
    BiBlockCrossAttention,
    GCMAttention,
    MTSelfAttention,
    SpatialAttention,
)
from avblocks.config import ConfigError
from avblocks.device import autocast, to_device
from avblocks.diffusion.ema import EMA
from avblocks.latent.losses import (
    PatchDiscriminator2d,
    PatchDiscriminator3d,
    hinge_d_loss,
    hinge_g_loss,
    multiscale_spectral_l1,
)
from avblocks.latent.mdsa import MDSA, MDSAConfig
from avblocks.latent.volume import VolumeDecoder, VolumeEncoder
from avblocks.timing import frame_columns
from recipes.common import distributed as dist_utils
from recipes.common import require
from recipes.common.data import ClipData, check_batch, check_data
from recipes.common.estimates import require_clips_fit, require_model_fits
from recipes.common.loop import (
    check_optim,
    ema_model,
    fit,
    make_optimizer,
    run_entry_point,
    start_run,
)
from recipes.common.speed import apply_speed, attention, library_config
from recipes.proav_dit.config import AutoencoderRecipe
from recipes.proav_dit.evaluate_autoencoder import evaluate


def validate(cfg: AutoencoderRecipe, *, world_size: int = 1) -> None:
    """Cross-field constraints and memory estimates, checked before anything is built or
    written; the error names the fields.

    Types, unknown keys and each field's declared bounds were already checked when the config
    was read (:func:`avblocks.config.config_from_dict`); this adds what one field alone
    cannot say.
    """
    d, m, o, r = cfg.data, cfg.model, cfg.optim, cfg.run
    check_optim(o, world_size=world_size)
    check_batch(o.batch_size, d)
    require(not (o.precision == "fp16" and cfg.loss.adversarial > 0),
            f"optim.precision (fp16) with loss.adversarial ({cfg.loss.adversarial}) > 0: the discriminator "
            "update has no loss scaler; use optim.precision=bf16")
    require(m.video_patch[0] == m.audio_patch[0],
            f"model.video_patch[0] ({m.video_patch[0]}) and model.audio_patch[0] ({m.audio_patch[0]}) "
            "must be equal (both latents share one t axis)")
    require(d.num_frames % m.video_patch[0] == 0,
            f"model.video_patch[0] ({m.video_patch[0]}) must divide data.num_frames ({d.num_frames})")
    for axis in (1, 2):
        require(d.size % m.video_patch[axis] == 0,
                f"model.video_patch[{axis}] ({m.video_patch[axis]}) must divide data.size ({d.size})")
    check_data(d)  # the mel settings (a preset's included) before the columns they give
    try:
        columns = frame_columns(d.sample_rate, d.fps, d.hop)
    except ValueError as e:
        raise ConfigError(f"data.sample_rate / (data.fps * data.hop): {e}") from None
    require(d.n_mels % m.audio_patch[1] == 0,
            f"model.audio_patch[1] ({m.audio_patch[1]}) must divide data.n_mels ({d.n_mels})")
    require(columns % m.audio_patch[2] == 0,
            f"model.audio_patch[2] ({m.audio_patch[2]}) must divide the {columns} spectrogram columns "
            f"per frame (data.sample_rate / (data.fps * data.hop))")
    frames = d.num_frames // m.video_patch[0]
    latent = f"the {frames} latent frames (data.num_frames / model.video_patch[0])"
    require(m.hidden_channels % m.heads == 0,
            f"model.heads ({m.heads}) must divide model.hidden_channels ({m.hidden_channels})")
    norm_groups = inspect.signature(VolumeEncoder).parameters["groups"].default
    require(m.hidden_channels % norm_groups == 0,
            f"model.hidden_channels ({m.hidden_channels}) must be a multiple of the encoder's "
            f"{norm_groups} normalisation groups")
    if "gcm" in m.stages:
        require(frames % m.groups == 0, f"model.groups ({m.groups}) must divide {latent}")
    if "biblock" in m.stages:
        require(frames % m.block_frames == 0, f"model.block_frames ({m.block_frames}) must divide {latent}")
    require_clips_fit("optim.batch_size", o.batch_size, d)
    # the evaluation keeps every clip and its reconstruction until the end
    require_clips_fit("run.eval_clips (each kept with its reconstruction)", 2 * r.eval_clips, d)
    require_model_fits("model.*", lambda: MDSA.from_config(library_config(m, MDSAConfig)))


# FSDP2 shards these sub-modules one by one (each all-gathered only while it runs), then the
# rest. Only modules whose outputs are tensors (or tuples of them) can be units: FSDP2 finds
# the outputs to hook the backward all-gather through pytrees, and TriPlane (a dataclass) is
# not one, so PlaneFusion itself is not a unit but its attention blocks are.
SHARDED_MODULES = (VolumeEncoder, VolumeDecoder, MTSelfAttention, SpatialAttention, GCMAttention,
                   BiBlockCrossAttention)


class VideoDiscriminator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frames, self.clip = PatchDiscriminator2d(), PatchDiscriminator3d()

    def loss_d(self, real, fake):
        return hinge_d_loss(self.frames(real), self.frames(fake)) + hinge_d_loss(self.clip(real), self.clip(fake))

    def loss_g(self, fake):
        return hinge_g_loss(self.frames(fake)) + hinge_g_loss(self.clip(fake))


def reconstruction_losses(cfg: AutoencoderRecipe, data: ClipData, model: MDSA, video, audio) -> dict:
    rec_video, rec_audio, posterior = model(video, audio)
    spectrogram = data.audio.video_like.to_spectrogram
    losses = {
        "pixel": (rec_video - video).abs().mean(),
        "pixel_mse": (rec_video - video).square().mean(),
        "mel": (rec_audio - audio).abs().mean(),
        "spectral": multiscale_spectral_l1(spectrogram(rec_audio), spectrogram(audio)),
        "kl": posterior.kl(),
    }
    losses["total"] = sum(getattr(cfg.loss, k) * losses[k] for k in ("pixel", "pixel_mse", "mel", "spectral", "kl"))
    return losses | {"_rec_video": rec_video}


def report_skipped_files(data: ClipData, out: Path, *, quiet: bool = False) -> None:
    """Write ``skipped_files.json``: every file of data.folder that is not trained on, those
    left out when indexing and those that failed to read later (``"failed at read time:
    ..."``); and, unless ``quiet``, print the folder's summary (files, clips, classes, skipped
    files and why)."""
    dataset = data.folder
    if dataset is None:
        return
    skipped = dict(dataset.skipped)
    for path in sorted(Path(dataset.root).rglob("*")):
        if path.is_file() and path.suffix.lower().lstrip(".") not in dataset.extensions:
            skipped[str(path.resolve())] = f"extension not in {list(dataset.extensions)}"
    skipped |= {path: f"failed at read time: {reason}" for path, reason in dataset.failed.items()}
    atomic_write_json(out / "skipped_files.json", skipped)
    if not quiet:
        print(f"data.folder: {dataset.summary(also_skipped=skipped)}")


def train(cfg: AutoencoderRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    dist_utils.barrier()
    torch.manual_seed(cfg.run.seed)
    data = ClipData(cfg.data)
    if ctx.is_main:
        report_skipped_files(data, out)
    if len(data.dataset) < cfg.optim.batch_size:
        raise ConfigError(f"data.folder ({cfg.data.folder}) holds {len(data.dataset)} usable clip(s), fewer "
                          f"than optim.batch_size ({cfg.optim.batch_size}); see {out / 'skipped_files.json'}")
    device = ctx.device
    data.to(device)
    model = MDSA.from_config(library_config(cfg.model, MDSAConfig)).to(device)
    o = cfg.optim
    disc = d_opt = None
    if cfg.loss.adversarial > 0:
        disc = VideoDiscriminator().to(device)
        d_opt = torch.optim.AdamW(disc.parameters(), lr=o.lr, betas=(0.5, 0.9))
    sharded = ctx.enabled and cfg.run.parallel == "fsdp"
    apply_speed(model, cfg.model, sharded=sharded)
    net = dist_utils.wrap_model(model, ctx, cfg.run.parallel, shard=SHARDED_MODULES, precision=o.precision)
    if ctx.enabled:  # same init everywhere (above); from here each rank draws its own noise
        torch.manual_seed(dist_utils.rank_seed(cfg.run.seed, ctx.rank))
    ema = EMA(model, decay=cfg.optim.ema_decay, warmup=True)
    opt, sched = make_optimizer(model.parameters(), o)
    parts = {"model": model, "ema": ema, "optimizer": opt, "scheduler": sched}
    if disc is not None:
        parts |= {"discriminator": disc, "discriminator_optimizer": d_opt}
    held = []  # this step's (video, reconstruction) pairs, for the discriminator update

    def micro_step(batch, step: int) -> dict[str, torch.Tensor]:
        video, audio, _ = data.model_inputs(batch)
        losses = reconstruction_losses(cfg, data, net, video, audio)
        rec_video = losses.pop("_rec_video")
        if disc is not None and step >= cfg.loss.adversarial_start:
            losses["generator"] = disc.loss_g(rec_video)
            losses["total"] = losses["total"] + cfg.loss.adversarial * losses["generator"]
            held.append((step, video, rec_video.detach()))
        return losses

    def discriminator_step(step: int) -> dict[str, torch.Tensor]:
        pairs = [(real, fake) for s, real, fake in held if s == step]  # not a skipped step's
        held.clear()
        if not pairs:
            return {}
        d_opt.zero_grad(set_to_none=True)
        total = 0.0
        for real, fake in pairs:
            with autocast(device, o.precision):
                d_loss = disc.loss_d(real, fake) / len(pairs)
            d_loss.backward()
            total = total + d_loss.detach()
        dist_utils.average_gradients(disc)
        d_opt.step()
        return {"discriminator": total}

    try:
        with attention(cfg.model):
            fitted = fit(desc="autoencoder", out=out, ctx=ctx, run=cfg.run, optim=o, parts=parts, net=net,
                         batches=lambda start: data.loader(batch_size=o.batch_size, total_steps=o.steps,
                                                           start_step=start, seed=cfg.run.seed, ctx=ctx),
                         micro_step=micro_step, after_step=discriminator_step if disc is not None else None,
                         pairs=(("model", "optimizer"), ("discriminator", "discriminator_optimizer")),
                         report=data.read_report)
    finally:  # read failures too, also when they stopped the run
        if ctx.is_main:
            report_skipped_files(data, out, quiet=True)
    final = ema_model(model, ema, ctx, cfg.run.parallel,
                      rebuild=lambda: MDSA.from_config(library_config(cfg.model, MDSAConfig)))
    dist_utils.barrier()
    if not ctx.is_main:
        return {"steps": fitted.steps}
    final_device = next(final.parameters()).device  # FSDP: a fresh CPU copy on rank 0
    data.to(final_device)
    calibration = next(iter(data.loader(batch_size=min(32, len(data.dataset)), total_steps=1, seed=1)))
    final.calibrate_scale(*data.model_inputs(to_device(calibration, final_device))[:2])
    final.save_pretrained(out / "model")
    metrics = evaluate(final, data, out / "eval", num_clips=cfg.run.eval_clips)
    metrics["steps"] = fitted.steps
    metrics["train_minutes"] = fitted.minutes
    if fitted.nonfinite_events:
        metrics["nonfinite_events"] = fitted.nonfinite_events
    return metrics


def main(argv=None) -> dict:
    return run_entry_point(AutoencoderRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
