"""The README's main command: train the tiny ProAV-DiT on the synthetic set and sample it.

    make demo        # = python -m recipes.proav_dit.demo [key=value ...]

Stages (each skipped when its output already exists, so a rerun only redoes what is missing;
delete ``outputs/demo`` to start over):

1. the tiny MDSA autoencoder (``configs/autoencoder_tiny.yaml``) for at most
   ``autoencoder_minutes``;
2. the tiny ST-DiT on its cached latents (``configs/dit_tiny.yaml``) for at most
   ``dit_minutes``;
3. a small feature network on the synthetic set, for Fréchet / kernel distances;
4. ``per_class`` clips per class, generated jointly, written as mp4 files with sound, PNG
   previews and a contact sheet; plus the same number of audio-to-video clips;
5. ``metrics.json``: AV-sync of the generated clips next to real and shuffled clips, the
   feature distances, the autoencoder's reconstruction metrics and the training times.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avblocks.atomic import atomic_path
from avblocks.dit.stdit import STDiT
from recipes.common import feature_net, load_config, parse_cli
from recipes.common.evaluation import generation_metrics
from recipes.proav_dit import train_autoencoder, train_dit
from recipes.proav_dit.latents import LatentSpace
from recipes.proav_dit.sample import generate, render, write_samples

CONFIGS = Path(__file__).parent / "configs"


@dataclass
class DemoConfig:
    output_dir: str = "outputs/demo"
    autoencoder_minutes: float = 4.5  # the config's 1200 steps normally end first (~4 min)
    dit_minutes: float = 4.0  # likewise 750 steps (~3.5 min)
    feature_steps: int = 200  # held-out accuracy is already 1.0 by then
    # extra key=value overrides of each stage's config (e.g. to shrink everything in tests)
    autoencoder_overrides: list[str] = field(default_factory=list)
    dit_overrides: list[str] = field(default_factory=list)
    feature_overrides: list[str] = field(default_factory=list)
    per_class: int = 4
    sample_steps: int = 16
    # guidance 1 (none): AV-sync falls as guidance rises at every budget measured
    # (benchmarks/README.md, "ProAV-DiT demo"), and it halves the sampling cost
    cfg_scale: float = 1.0
    seed: int = 0
    progress: bool = True


def _stage(name: str) -> None:
    print(f"\n== {name} ==", flush=True)


def run(cfg: DemoConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    summary: dict = {}

    ae_dir = out / "autoencoder"
    _stage("1/5 autoencoder")
    if not (ae_dir / "model" / "config.json").is_file():
        ae_cfg = load_config(train_autoencoder.AutoencoderRecipe, CONFIGS / "autoencoder_tiny.yaml", [
            f"run.output_dir={ae_dir}", f"run.max_minutes={cfg.autoencoder_minutes}",
            f"run.seed={cfg.seed}", f"run.progress={str(cfg.progress).lower()}", *cfg.autoencoder_overrides])
        summary["autoencoder"] = train_autoencoder.train(ae_cfg)
    else:
        summary["autoencoder"] = json.loads((ae_dir / "eval" / "metrics.json").read_text())

    dit_dir = out / "dit"
    _stage("2/5 ST-DiT denoiser")
    if not (dit_dir / "model" / "config.json").is_file():
        dit_cfg = load_config(train_dit.DiTRecipe, CONFIGS / "dit_tiny.yaml", [
            f"autoencoder={ae_dir}", f"run.output_dir={dit_dir}", f"run.max_minutes={cfg.dit_minutes}",
            f"run.seed={cfg.seed}", f"run.progress={str(cfg.progress).lower()}", *cfg.dit_overrides])
        summary["dit"] = train_dit.train(dit_cfg)

    _stage("3/5 feature network")
    features = feature_net.load_or_train(out / "features", steps=cfg.feature_steps, seed=cfg.seed,
                                            progress=cfg.progress, overrides=cfg.feature_overrides)

    _stage("4/5 sampling")
    dit_cfg = load_config(train_dit.DiTRecipe, dit_dir / "config.yaml")
    space = LatentSpace.from_run(ae_dir, multiple=dit_cfg.model.patch)
    denoiser = STDiT.from_pretrained(dit_dir / "model")
    labels = torch.arange(space.data.num_classes).repeat_interleave(cfg.per_class)
    latent = generate(space, denoiser, labels, steps=cfg.sample_steps, cfg_scale=cfg.cfg_scale,
                      seed=cfg.seed, progress=cfg.progress)
    video, waveform = render(space, latent)
    write_samples(out / "samples", space, video, waveform, labels, prefix="joint")

    batch = space.data.held_out_batch(len(labels))
    real_video, real_audio, real_labels = space.data.model_inputs(batch)
    condition = space.encode(real_video, real_audio)
    a2v_latent = generate(space, denoiser, real_labels, steps=cfg.sample_steps, cfg_scale=cfg.cfg_scale,
                          mode="a2v", condition=condition, seed=cfg.seed + 1, progress=cfg.progress)
    a2v_video, _ = render(space, a2v_latent)
    write_samples(out / "samples_audio_to_video", space, a2v_video, batch["audio"], real_labels, prefix="a2v")

    _stage("5/5 evaluation")
    c = space.data.config
    metrics = generation_metrics(video, waveform, batch["video"], batch["audio"], sample_rate=c.sample_rate,
                                 fps=c.fps, features=features)
    metrics["sync_audio_to_video"] = generation_metrics(
        a2v_video, batch["audio"], batch["video"], batch["audio"], sample_rate=c.sample_rate, fps=c.fps,
    )["sync_generated"]
    metrics["autoencoder"] = summary.get("autoencoder", {})
    metrics["dit"] = summary.get("dit", {})
    metrics["total_minutes"] = round((time.monotonic() - began) / 60, 2)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv=None) -> dict:
    cfg = parse_cli(DemoConfig, argv, description=__doc__.splitlines()[0])
    metrics = run(cfg)
    g, r, s = metrics["sync_generated"], metrics["sync_real"], metrics["sync_shuffled"]
    print(json.dumps(metrics, indent=2))
    print(f"\nAV-sync: generated {g['score']:.2f} | real {r['score']:.2f} | shuffled {s['score']:.2f}")
    print(f"wrote {cfg.output_dir}/samples/*.mp4, contact sheet and metrics.json")
    return metrics


if __name__ == "__main__":
    main()
