"""Train the ProAV-DiT denoiser (ST-DiT) on the latents of a trained MDSA autoencoder.

    python -m recipes.proav_dit.train_dit --config recipes/proav_dit/configs/dit_tiny.yaml [key=value ...]

``autoencoder`` names an autoencoder run folder (``train_autoencoder``'s output); its data
config is reused, and its latents are encoded once and cached (:mod:`recipes.proav_dit.latents`).

Objective: rectified flow on the stacked ``b c 6 s s`` latent with *per-plane* timesteps.
Each training example is, at random:

- joint (probability ``1 - p_audio_to_video - p_video_to_audio``): all six planes share one
  noise level;
- audio-to-video: the three audio planes are held clean (timestep 0, excluded from the
  loss) and the video planes are noised;
- video-to-audio: the converse.

So the one model generates jointly and does both conditional tasks by holding one modality's
planes clean at sampling time (ProAV-DiT's per-plane timesteps). The noise is zero on the
canvas padding (the padded cells stay exactly 0 along the whole path, and their target
velocity is 0), so padding never looks like signal. Class labels are dropped with
``model.class_dropout`` for classifier-free guidance.

Writes to ``run.output_dir``: ``config.yaml``, ``checkpoints/`` (atomic, exact resume),
``log.jsonl``, ``model/`` (EMA weights, ``config.json + model.safetensors``).
"""

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from avblocks.diffusion import FlowMatching
from avblocks.diffusion.ema import EMA
from avblocks.dit.stdit import STDiT
from recipes.common import (
    CheckpointManager,
    StepBatchSampler,
    capture_rng,
    parse_cli,
    restore_rng,
    warmup_cosine,
)
from recipes.common.config import dump_config
from recipes.proav_dit.latents import AUDIO, VIDEO, LatentSpace, cached_latents


@dataclass
class DenoiserConfig:
    patch: int = 2
    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    class_dropout: float = 0.1


@dataclass
class DiffusionConfig:
    time_distribution: str = "logit_normal"
    shift: float = 1.0
    p_audio_to_video: float = 0.1  # hold the audio planes clean
    p_video_to_audio: float = 0.1  # hold the video planes clean


@dataclass
class DiTOptimConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    bf16: bool = False


@dataclass
class DiTRunConfig:
    output_dir: str = "outputs/dit"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    max_minutes: float = 0.0  # > 0: stop (and save) once this much wall time has passed
    progress: bool = True


@dataclass
class DiTRecipe:
    autoencoder: str = "outputs/autoencoder_tiny"
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: DiTOptimConfig = field(default_factory=DiTOptimConfig)
    run: DiTRunConfig = field(default_factory=DiTRunConfig)


def build_denoiser(cfg: DiTRecipe, space: LatentSpace) -> STDiT:
    m = cfg.model
    return STDiT(in_channels=space.stack.channels, side=space.stack.side, frames=space.stack.num_planes,
                 patch=m.patch, hidden_size=m.hidden_size, depth=m.depth, num_heads=m.num_heads,
                 mlp_ratio=m.mlp_ratio, num_classes=space.data.num_classes, class_dropout=m.class_dropout)


def clean_masks(batch: int, p_a2v: float, p_v2a: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``b 6`` bool: which planes each example holds clean (see the module docstring)."""
    u = torch.rand(batch, generator=generator)
    mask = torch.zeros(batch, 6, dtype=torch.bool)
    mask[u < p_a2v, AUDIO] = True
    mask[(u >= p_a2v) & (u < p_a2v + p_v2a), VIDEO] = True
    return mask


def train(cfg: DiTRecipe) -> dict:
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    torch.manual_seed(cfg.run.seed)
    space = LatentSpace.from_run(cfg.autoencoder, multiple=cfg.model.patch)
    cache = cached_latents(space, cfg.autoencoder, progress=cfg.run.progress)
    latents, labels = cache["latents"], cache["labels"]
    valid = space.valid_mask[None, None].to(latents.dtype)  # 1 1 6 s s

    model = build_denoiser(cfg, space)
    ema = EMA(model, decay=cfg.optim.ema_decay, warmup=True)
    o, d = cfg.optim, cfg.diffusion
    flow = FlowMatching(time_distribution=d.time_distribution, shift=d.shift)
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(0.9, 0.99), weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, partial(warmup_cosine, warmup=o.warmup, total=o.steps, min_ratio=o.min_lr_ratio))
    checkpoints = CheckpointManager(out / "checkpoints", keep=cfg.run.keep_checkpoints)
    start = 0
    if (state := checkpoints.load_latest()) is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        start = state["step"]
        print(f"resuming from step {start} ({checkpoints.checkpoints()[-1]})")

    batches = StepBatchSampler(num_items=len(latents), batch_size=o.batch_size, total_steps=o.steps,
                               seed=cfg.run.seed, start_step=start)
    bar = tqdm(batches, initial=start, total=o.steps, desc="denoiser", disable=not cfg.run.progress,
               dynamic_ncols=True)
    began, step = time.monotonic(), start
    model.train()
    with open(out / "log.jsonl", "a", buffering=1) as log:  # line-buffered: tail -f works
        for step, index in enumerate(bar, start=start):
            x0, y = latents[index], labels[index]
            b = x0.shape[0]
            t = flow.sample_timesteps(b)[:, None].expand(b, 6).contiguous()
            noise = torch.randn_like(x0) * valid
            mask = clean_masks(b, d.p_audio_to_video, d.p_video_to_audio)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=o.bf16):
                loss = flow.loss(model, x0, t=t, noise=noise, clean_mask=mask, model_kwargs={"y": y})
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step}: {loss.item()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            sched.step()
            ema.update(model)
            elapsed = time.monotonic() - began
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            clips_per_s=f"{(step + 1 - start) * b / max(elapsed, 1e-9):.0f}")
            if step % cfg.run.log_every == 0:
                log.write(json.dumps({"step": step, "lr": sched.get_last_lr()[0], "loss": round(loss.item(), 6)}) + "\n")
            done = step + 1
            out_of_time = cfg.run.max_minutes > 0 and elapsed > 60 * cfg.run.max_minutes
            if done % cfg.run.checkpoint_every == 0 or done == o.steps or out_of_time:
                checkpoints.save(done, {"model": model.state_dict(), "ema": ema.state_dict(),
                                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                        "rng": capture_rng()})
            if out_of_time:
                print(f"time budget of {cfg.run.max_minutes} min reached at step {done}")
                break
    bar.close()
    ema.copy_to(model)
    model.save_pretrained(out / "model")
    return {"steps": step + 1, "train_minutes": round((time.monotonic() - began) / 60, 2),
            "final_loss": loss.item()}


def main(argv=None) -> dict:
    cfg = parse_cli(DiTRecipe, argv, description=__doc__.splitlines()[0])
    result = train(cfg)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
