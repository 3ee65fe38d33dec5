"""Train the MDSA audio-video autoencoder.

    python -m recipes.proav_dit.train_autoencoder --config recipes/proav_dit/configs/autoencoder_tiny.yaml \
        [key=value ...]

Writes to ``run.output_dir``: ``config.yaml`` (the resolved config), ``checkpoints/`` (atomic,
last ``run.keep_checkpoints`` kept; a rerun with the same output folder resumes exactly from the
newest), ``log.jsonl`` (losses per logged step), ``model/`` (the EMA weights with the latent
scale calibrated, as ``config.json + model.safetensors``) and ``eval/`` (metrics.json,
side-by-side mp4 files and PNGs).

Losses: L1 on pixels; L1 on normalised log-mel frames; the multi-resolution spectral term on
the concatenated spectrogram; KL of the Gaussian bottleneck; and, when ``loss.adversarial > 0``,
hinge losses from a per-frame 2D and a spatio-temporal 3D patch discriminator on the video,
switched on at step ``loss.adversarial_start``.
"""

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from avblocks.diffusion.ema import EMA
from avblocks.latent.losses import (
    PatchDiscriminator2d,
    PatchDiscriminator3d,
    hinge_d_loss,
    hinge_g_loss,
    multiscale_spectral_l1,
)
from avblocks.latent.mdsa import MDSA, MDSAConfig
from recipes.common import CheckpointManager, capture_rng, parse_cli, restore_rng, warmup_cosine
from recipes.common.config import dump_config
from recipes.proav_dit.data import AVData, DataConfig
from recipes.proav_dit.evaluate_autoencoder import evaluate


@dataclass
class LossConfig:
    pixel: float = 1.0
    mel: float = 1.0
    spectral: float = 1.0
    kl: float = 1e-6
    adversarial: float = 0.0  # 0: no adversarial stage
    adversarial_start: int = 1000


@dataclass
class OptimConfig:
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    bf16: bool = False


@dataclass
class RunConfig:
    output_dir: str = "outputs/autoencoder"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    max_minutes: float = 0.0  # > 0: stop (and save) once this much wall time has passed
    eval_clips: int = 32
    progress: bool = True


@dataclass
class AutoencoderRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: MDSAConfig = field(default_factory=MDSAConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


class VideoDiscriminator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frames, self.clip = PatchDiscriminator2d(), PatchDiscriminator3d()

    def loss_d(self, real, fake):
        return hinge_d_loss(self.frames(real), self.frames(fake)) + hinge_d_loss(self.clip(real), self.clip(fake))

    def loss_g(self, fake):
        return hinge_g_loss(self.frames(fake)) + hinge_g_loss(self.clip(fake))


def reconstruction_losses(cfg: AutoencoderRecipe, data: AVData, model: MDSA, video, audio) -> dict:
    rec_video, rec_audio, posterior = model(video, audio)
    spectrogram = data.frames.to_spectrogram
    losses = {
        "pixel": (rec_video - video).abs().mean(),
        "mel": (rec_audio - audio).abs().mean(),
        "spectral": multiscale_spectral_l1(spectrogram(rec_audio), spectrogram(audio)),
        "kl": posterior.kl(),
    }
    losses["total"] = sum(getattr(cfg.loss, k) * losses[k] for k in ("pixel", "mel", "spectral", "kl"))
    return losses | {"_rec_video": rec_video}


def train(cfg: AutoencoderRecipe) -> dict:
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    torch.manual_seed(cfg.run.seed)
    data = AVData(cfg.data)
    model = MDSA.from_config(cfg.model)
    ema = EMA(model, decay=cfg.optim.ema_decay, warmup=True)
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(0.9, 0.99), weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, partial(warmup_cosine, warmup=o.warmup, total=o.steps, min_ratio=o.min_lr_ratio))
    disc = d_opt = None
    if cfg.loss.adversarial > 0:
        disc = VideoDiscriminator()
        d_opt = torch.optim.AdamW(disc.parameters(), lr=o.lr, betas=(0.5, 0.9))
    checkpoints = CheckpointManager(out / "checkpoints", keep=cfg.run.keep_checkpoints)

    start = 0
    if (state := checkpoints.load_latest()) is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if disc is not None:
            disc.load_state_dict(state["discriminator"])
            d_opt.load_state_dict(state["discriminator_optimizer"])
        restore_rng(state["rng"])
        start = state["step"]
        print(f"resuming from step {start} ({checkpoints.checkpoints()[-1]})")

    def save(step: int) -> None:
        state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "rng": capture_rng()}
        if disc is not None:
            state |= {"discriminator": disc.state_dict(), "discriminator_optimizer": d_opt.state_dict()}
        checkpoints.save(step, state)

    loader = data.loader(batch_size=o.batch_size, total_steps=o.steps, start_step=start, seed=cfg.run.seed)
    bar = tqdm(loader, initial=start, total=o.steps, desc="autoencoder", disable=not cfg.run.progress,
               dynamic_ncols=True)
    began, step = time.monotonic(), start
    model.train()
    with open(out / "log.jsonl", "a", buffering=1) as log:  # line-buffered: tail -f works
        for step, batch in enumerate(bar, start=start):
            video, audio, _ = data.model_inputs(batch)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=o.bf16):
                losses = reconstruction_losses(cfg, data, model, video, audio)
                rec_video = losses.pop("_rec_video")
                adversarial = disc is not None and step >= cfg.loss.adversarial_start
                if adversarial:
                    losses["generator"] = disc.loss_g(rec_video)
                    losses["total"] = losses["total"] + cfg.loss.adversarial * losses["generator"]
            if not torch.isfinite(losses["total"]):
                raise FloatingPointError(f"non-finite loss at step {step}: {losses['total'].item()}")
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            sched.step()
            ema.update(model)
            if adversarial:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=o.bf16):
                    losses["discriminator"] = disc.loss_d(video, rec_video.detach())
                d_opt.zero_grad(set_to_none=True)
                losses["discriminator"].backward()
                d_opt.step()
            elapsed = time.monotonic() - began
            bar.set_postfix(loss=f"{losses['total'].item():.4f}",
                            clips_per_s=f"{(step + 1 - start) * o.batch_size / max(elapsed, 1e-9):.1f}")
            if step % cfg.run.log_every == 0:
                log.write(json.dumps({"step": step, "lr": sched.get_last_lr()[0]}
                                     | {k: round(v.item(), 6) for k, v in losses.items()}) + "\n")
            done = step + 1
            out_of_time = cfg.run.max_minutes > 0 and elapsed > 60 * cfg.run.max_minutes
            if done % cfg.run.checkpoint_every == 0 or done == o.steps or out_of_time:
                save(done)
            if out_of_time:
                print(f"time budget of {cfg.run.max_minutes} min reached at step {done}")
                break
    bar.close()
    final = model
    ema.copy_to(final)  # the EMA weights are the model that is kept
    calibration = next(iter(data.loader(batch_size=min(32, len(data.dataset)), total_steps=1, seed=1)))
    final.calibrate_scale(*data.model_inputs(calibration)[:2])
    final.save_pretrained(out / "model")
    metrics = evaluate(final, data, out / "eval", num_clips=cfg.run.eval_clips)
    metrics["steps"] = step + 1
    metrics["train_minutes"] = round((time.monotonic() - began) / 60, 2)
    return metrics


def main(argv=None) -> dict:
    cfg = parse_cli(AutoencoderRecipe, argv, description=__doc__.splitlines()[0])
    metrics = train(cfg)
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
