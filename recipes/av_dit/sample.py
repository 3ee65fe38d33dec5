"""Sample sounding videos from a trained AV-DiT: mp4 files with sound, PNG previews, a contact sheet.

    python -m recipes.av_dit.sample outputs/av_dit [--per-class 2] [--steps 25] [--cfg-scale 2]

Sampler: the model is a DDPM epsilon model (the frozen DiT's objective), so sampling is
deterministic DDIM (``eta = 0``, "trailing" spacing: 999, 959, ... for 25 steps) under
classifier-free guidance with the DiT's null label (both modalities guided together; unlike
DiT's ``forward_with_cfg``, every latent channel is guided). ``--sampler dpm`` uses
DPM-Solver++(2M) instead (the same ODE, second order). Video frames and audio images start
from one noise tensor and share every step (joint generation). The latents are decoded
image by image, the spectrogram images turned back into video-like audio frames
(:class:`recipes.av_dit.images.AVImages`) and a waveform (Griffin-Lim or a local vocos),
then written as mp4 (H.264 + AAC) by :func:`recipes.proav_dit.sample.write_samples`.
"""

import argparse
import json
from pathlib import Path

import torch

from avblocks.diffusion import ClassifierFreeGuidance
from avblocks.diffusion.ddpm import DDPM
from avblocks.diffusion.samplers import DDIMSampler, DPMSolverPP2MSampler
from avblocks.dit.av_dit import AVDiT
from recipes.av_dit.images import ImageLatents
from recipes.proav_dit.sample import write_samples

SAMPLERS = {"ddim": DDIMSampler, "dpm": DPMSolverPP2MSampler}


@torch.no_grad()
def generate(space: ImageLatents, model: AVDiT, ddpm: DDPM, labels: torch.Tensor, *, steps: int = 25,
             sampler: str = "ddim", cfg_scale: float = 2.0, seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Latents ``b z (tv + ta) h w`` for ``labels`` (clip classes)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler ({sampler!r}) must be one of {sorted(SAMPLERS)}")
    model.eval()
    h, w = space.latent_size
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(labels.shape[0], space.channels, model.num_images, h, w, generator=generator)
    guided = ClassifierFreeGuidance(model, scale=cfg_scale, null_label=model.null_label)
    return SAMPLERS[sampler](ddpm).sample(guided, noise, steps, model_kwargs={"y": labels}, progress=progress)


def render(space: ImageLatents, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents -> ``(video b 3 t h w in [-1, 1], waveform b n)``."""
    video, audio = space.decode(latent)
    return video, space.data.waveform(audio)


def main(argv=None) -> dict:
    from recipes.av_dit.pretrain import build_ddpm
    from recipes.av_dit.train import load_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a recipes.av_dit.train output folder")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="ddim")
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/samples")
    args = parser.parse_args(argv)
    cfg, space, model = load_run(args.run_dir)
    labels = torch.arange(space.data.num_classes).repeat_interleave(args.per_class)
    latent = generate(space, model, build_ddpm(cfg.diffusion), labels, steps=args.steps, sampler=args.sampler,
                      cfg_scale=args.cfg_scale, seed=args.seed)
    video, waveform = render(space, latent)
    out = args.out or args.run_dir / "samples"
    paths = write_samples(out, space, video, waveform, labels, prefix="joint")
    summary = {"clips": len(paths), "folder": str(out), "sampler": args.sampler, "steps": args.steps,
               "cfg_scale": args.cfg_scale}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
