"""Where AV-DiT's pictures break: the codec, the frozen image DiT, or the adapters?

    PYTHONPATH=. python benchmarks/av_dit_pictures.py AUTOENCODER_RUN PRETRAIN_RUN [--clips 32]

Object integrity (:func:`avblocks.metrics.integrity.object_integrity`, frames with one whole
object) on the first ``clips`` held-out synthetic clips, in memory, of:

1. the real clips after the image autoencoder's round trip, with Gaussian noise of std
   0 / 0.1 / 0.2 / 0.3 added to the (unit-std) latents: is the codec fragile?
2. the frozen image DiT alone (an AV-DiT with fresh, zero adapters: every image denoised on
   its own), DDIM 25 steps, guidance 1 / 2 / 4, seed 0: the pictures before any adapter;
3. the frozen DiT from the real clips' latents noised to DDPM level ``t0`` (100 ... 999) and
   denoised with 10 DDIM steps, with the clips' labels, no guidance: the noise levels where
   it loses the object.

Prints one JSON line per measurement.
"""

import argparse
import json

import torch

from avblocks.diffusion.samplers import DDIMSampler
from avblocks.metrics.integrity import object_integrity
from recipes.av_dit.codec import load_codec
from recipes.av_dit.config import AVDiTRecipe
from recipes.av_dit.train import build_model, build_pipeline
from recipes.av_dit.trainer import build_ddpm
from recipes.common.sync_eval import SyncEvalConfig, held_out


def report(what: str, value, video: torch.Tensor, labels: torch.Tensor) -> dict:
    row = {"what": what, "value": value} | object_integrity(video, labels, num_classes=4).as_dict()
    print(json.dumps(row), flush=True)
    return row


@torch.no_grad()
def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("autoencoder")
    parser.add_argument("pretrained")
    parser.add_argument("--clips", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = AVDiTRecipe(autoencoder=args.autoencoder, pretrained=args.pretrained)
    codec, data = load_codec(args.autoencoder)
    real = held_out(SyncEvalConfig(run_dir=args.pretrained, clips=args.clips))
    video, frames, labels = data.model_inputs(real)
    z0 = codec.encode_frames(video, frames)
    rows = []
    g = torch.Generator().manual_seed(0)
    for std in (0.0, 0.1, 0.2, 0.3):
        rows.append(report("codec, latent noise std", std,
                           codec.decode_frames(z0 + std * torch.randn(z0.shape, generator=g))[0], labels))
    model = build_model(cfg, codec, data.num_classes).eval()  # fresh adapters: the frozen DiT per image
    pipe = build_pipeline(cfg, codec, model)
    for scale in (1.0, 2.0, 4.0):
        clips = pipe(labels=labels, seed=0, cfg_scale=scale, progress=False)
        rows.append(report("frozen DiT alone, guidance", scale, clips.video, labels))
    ddpm, sampler = build_ddpm(cfg.diffusion), DDIMSampler(build_ddpm(cfg.diffusion))
    n = len(labels)
    for t0 in (100, 250, 400, 600, 999):
        x = ddpm.q_sample(z0, torch.full((n,), t0), torch.randn(z0.shape, generator=g))
        levels = torch.linspace(t0, 0, 11).round().long().tolist()
        for a, b in zip(levels[:-1], levels[1:], strict=True):
            x = sampler.step(model, x, torch.full((n,), a), torch.full((n,), b if b > 0 else -1),
                             model_kwargs={"y": labels})
        rows.append(report("frozen DiT from real latents noised to t0", t0, codec.decode_frames(x)[0], labels))
    return rows


if __name__ == "__main__":
    main()
