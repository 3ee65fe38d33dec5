"""AV-sync of trained ProAV-DiT denoisers, side by side: joint, audio-to-video, video-to-audio.

    PYTHONPATH=. python benchmarks/proav_sync.py AUTOENCODER_RUN DIT_RUN [DIT_RUN ...] \
        [--clips 32] [--steps 16] [--guidance 1 2] [--seed 1]

Every denoiser (each DIT_RUN's saved ``pipeline/``: its plane layout, canvas or packed, comes
with it) samples the same held-out labels with the same noise (Heun, ``--steps`` steps),
jointly, audio-to-video (the audio planes held clean at the held-out clips' encoded audio;
scored with the real audio) and video-to-audio (the converse; scored with the real video),
and is scored against those clips (:func:`recipes.common.evaluation.sync_scores`): the
fraction of audio onsets with a visual bounce within one frame, the reverse fraction, and how
many onsets / bounces were detected (real clips have about 3 of each). The rows "real" and
"shuffled" (each video with the next clip's audio: the chance level) give the scale. The
held-out clips come from AUTOENCODER_RUN's data config. Prints a markdown table.
"""

import argparse

import torch

from avblocks.latent.planes import AUDIO_PLANES, VIDEO_PLANES
from avblocks.pipelines import ProAVDiTPipeline
from recipes.common import load_config
from recipes.common.evaluation import generation_metrics, sync_scores
from recipes.proav_dit.codec import load_codec
from recipes.proav_dit.config import DiTRecipe


def _row(name: str, s: dict) -> str:
    return f"| {name} | {s['score']:.2f} | {s['reverse']:.2f} | {s['onsets']} | {s['bounces']} |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("autoencoder")
    parser.add_argument("dits", nargs="+")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    _, data = load_codec(args.autoencoder)
    batch = data.held_out_batch(args.clips)
    video, audio, labels = data.model_inputs(batch)
    sr, fps = data.spec.sample_rate, data.spec.fps
    reference = generation_metrics(batch["video"], batch["audio"], batch["video"], batch["audio"],
                                   sample_rate=sr, fps=fps)
    print("| clips | AV-sync | reverse | onsets | bounces |")
    print("|---|---:|---:|---:|---:|")
    print(_row("real", reference["sync_real"]))
    print(_row("shuffled real pairs", reference["sync_shuffled"]))
    for run in args.dits:
        cfg = load_config(DiTRecipe, f"{run}/config.yaml")
        pipe = ProAVDiTPipeline.from_pretrained(f"{run}/pipeline")
        codec = pipe.codec
        condition = codec.encode_frames(video, audio)
        layout = cfg.model.layout + (f", across {cfg.model.across}" if cfg.model.layout == "packed" else "")
        for scale in args.guidance:
            for mode in ("joint", "a2v", "v2a"):
                clean = None
                if mode != "joint":
                    clean = torch.zeros(len(labels), 6, dtype=torch.bool)
                    clean[:, AUDIO_PLANES if mode == "a2v" else VIDEO_PLANES] = True
                latent = pipe.sample_latents(labels, condition=None if clean is None else condition, clean=clean,
                                             steps=args.steps, sampler="heun", cfg_scale=scale, seed=args.seed,
                                             progress=False)
                gen_video, gen_wave = codec.decode(latent)
                wave = batch["audio"] if mode == "a2v" else gen_wave
                if mode == "v2a":
                    gen_video = batch["video"]
                name = f"{run} ({layout}, {cfg.optim.steps} steps), {mode}, guidance {scale:g}"
                print(_row(name, sync_scores(gen_video, wave, sr, fps)), flush=True)


if __name__ == "__main__":
    main()
