"""Sample sounding videos from a trained ProAV-DiT: mp4 files with sound and a contact sheet.

    python -m recipes.proav_dit.sample outputs/dit_tiny [--per-class 2] [--mode joint|a2v|v2a]

Modes (one model, per-plane timesteps): ``joint`` generates both modalities from noise;
``a2v`` holds the audio planes clean at the encoded latents of held-out clips and generates
the video; ``v2a`` the converse. Sampling integrates the flow ODE with Heun's method (or
Euler) under classifier-free guidance. Padded canvas cells start and stay at 0.
"""

import argparse
import json
from pathlib import Path

import torch

from avblocks.atomic import atomic_path
from avblocks.data import write_mp4
from avblocks.data.preview import save_preview
from avblocks.diffusion import ClassifierFreeGuidance, FlowEulerSampler, FlowHeunSampler
from avblocks.dit.stdit import STDiT
from recipes.proav_dit.latents import AUDIO, VIDEO, LatentSpace

MODES = ("joint", "a2v", "v2a")


@torch.no_grad()
def generate(space: LatentSpace, denoiser: STDiT, labels: torch.Tensor, *, steps: int = 20,
             sampler: str = "heun", cfg_scale: float = 1.0, mode: str = "joint",
             condition: torch.Tensor | None = None, seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Stacked latents ``b c 6 s s`` for ``labels``; ``condition`` holds the clean planes in a2v/v2a."""
    if mode not in MODES:
        raise ValueError(f"mode ({mode!r}) must be one of {MODES}")
    if (mode == "joint") != (condition is None):
        raise ValueError(f"mode {mode!r} {'takes no' if mode == 'joint' else 'needs a'} condition latent")
    denoiser.eval()
    b, stack = labels.shape[0], space.stack
    valid = stack.valid_mask[None, None].float()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(b, stack.channels, stack.num_planes, stack.side, stack.side, generator=generator) * valid
    clean = None
    if mode != "joint":
        clean = torch.zeros(b, stack.num_planes, dtype=torch.bool)
        clean[:, AUDIO if mode == "a2v" else VIDEO] = True
    solver = {"heun": FlowHeunSampler, "euler": FlowEulerSampler}[sampler]()
    guided = ClassifierFreeGuidance(denoiser, scale=cfg_scale, null_label=denoiser.null_label)
    x = solver.sample(guided, noise, steps, model_kwargs={"y": labels}, clean_mask=clean, fixed=condition,
                      progress=progress)
    return x * valid


def render(space: LatentSpace, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked latents -> ``(video b 3 t h w, waveform b n)``."""
    video, audio = space.decode(latent)
    return video, space.data.waveform(audio)


def contact_sheet(path: Path, video: torch.Tensor, waveform: torch.Tensor, sample_rate: int,
                  titles: list[str], frames: int = 8) -> None:
    """One row per clip: ``frames`` evenly spaced frames, then the clip's log spectrogram."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from avblocks.data.preview import spectrogram_db

    n, t = video.shape[0], video.shape[2]
    picks = torch.linspace(0, t - 1, min(frames, t)).round().long()
    fig = Figure(figsize=(0.9 * len(picks) + 2.5, 1.1 * n + 0.3), layout="constrained")
    grid = fig.add_gridspec(n, 2, width_ratios=[len(picks), 3])
    for i in range(n):
        strip = ((video[i][:, picks] + 1) / 2).clamp(0, 1).permute(2, 1, 3, 0).flatten(1, 2)  # h (t w) c
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(strip.numpy(), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(titles[i], fontsize=7, loc="left")
        spec, _ = spectrogram_db(waveform[i], sample_rate)
        ax = fig.add_subplot(grid[i, 1])
        ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_samples(out_dir: Path, space: LatentSpace, video: torch.Tensor, waveform: torch.Tensor,
                  labels: torch.Tensor, prefix: str = "sample") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    c = space.data.config
    paths = []
    for i in range(video.shape[0]):
        name = f"{prefix}{i:02d}_class{int(labels[i])}"
        paths.append(write_mp4(out_dir / f"{name}.mp4", video[i], waveform[i], c.fps, c.sample_rate))
        save_preview(out_dir / f"{name}.png", video[i], waveform[i], c.sample_rate, fps=c.fps, title=name)
    contact_sheet(out_dir / f"{prefix}_contact_sheet.png", video, waveform, c.sample_rate,
                  [f"{prefix} {i} (class {int(labels[i])})" for i in range(video.shape[0])])
    return paths


def main(argv=None) -> dict:
    from recipes.common.config import load_config
    from recipes.proav_dit.train_dit import DiTRecipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a train_dit output folder")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--mode", choices=MODES, default="joint")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", choices=("heun", "euler"), default="heun")
    parser.add_argument("--cfg-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/samples_MODE")
    args = parser.parse_args(argv)
    cfg = load_config(DiTRecipe, args.run_dir / "config.yaml")
    space = LatentSpace.from_run(cfg.autoencoder, multiple=cfg.model.patch)
    denoiser = STDiT.from_pretrained(args.run_dir / "model")
    labels = torch.arange(space.data.num_classes).repeat_interleave(args.per_class)
    condition = None
    if args.mode != "joint":
        batch = space.data.held_out_batch(len(labels))
        video, audio, labels = space.data.model_inputs(batch)
        condition = space.encode(video, audio)
    latent = generate(space, denoiser, labels, steps=args.steps, sampler=args.sampler,
                      cfg_scale=args.cfg_scale, mode=args.mode, condition=condition, seed=args.seed)
    video, waveform = render(space, latent)
    out = args.out or args.run_dir / f"samples_{args.mode}"
    paths = write_samples(out, space, video, waveform, labels, prefix=args.mode)
    summary = {"mode": args.mode, "clips": len(paths), "folder": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
