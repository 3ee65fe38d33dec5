"""Evaluate long audio-driven generation: AV-sync, clip-boundary discontinuity, speed.

    python -m recipes.read_a2v.evaluate RUN_DIR [--clips 4] [--frames 64] [--seed 0] [--out eval.json]

For each of ``--clips`` held-out synthetic clips of ``--frames`` frames (default: 4x the
training clips' ``data.num_frames``), the video is generated from the clip's first frame and
its soundtrack with :func:`recipes.read_a2v.generate.iter_long_generation`; then

- **AV-sync** (:func:`avblocks.metrics.sync.batch_sync_score`, tolerance 1 frame): the
  generated videos against their driving audio, against *shuffled* audio (clip ``i``'s video
  with clip ``i+1``'s soundtrack: what an unsynchronised video scores), and the real videos
  against their audio (the ceiling). ``score``: onsets with a bounce nearby; ``reverse``:
  bounces with an onset nearby;
- **discontinuity**: mean absolute difference of consecutive frames (pixels in [-1, 1]) over
  the pairs that straddle a clip boundary (the carried frame and the first new frame of the
  next clip) vs all other pairs (within clips), for the generated and the real videos;
- **speed**: generated frames per second of wall time (codec + sampling, batch 1, one
  process, ``--threads`` torch threads, default 1), excluding mp4 encoding.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from avblocks.metrics.sync import batch_sync_score
from recipes.read_a2v.generate import driving_clip, iter_long_generation, load_run

__all__ = ["boundary_pairs", "discontinuity", "evaluate", "main"]


def boundary_pairs(frames: int, motion: int) -> list[int]:
    """Indices ``j`` whose pair ``(j, j+1)`` straddles a clip boundary: ``j = k (motion - 1)``
    for clips ``k >= 1`` (frame ``j`` is the carried frame, ``j + 1`` the first new one)."""
    return [j for j in range(motion - 1, frames - 1, motion - 1)]


def discontinuity(video: torch.Tensor, motion: int) -> dict[str, float]:
    """Mean |frame j+1 - frame j| at clip boundaries and within clips (``video b c t h w``)."""
    diffs = (video[:, :, 1:] - video[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))  # t-1
    at = boundary_pairs(video.shape[2], motion)
    inside = [j for j in range(video.shape[2] - 1) if j not in at]
    return {"boundary": round(diffs[at].mean().item(), 4) if at else None,
            "within": round(diffs[inside].mean().item(), 4)}


def _rounded(value: float) -> float | None:
    return None if value != value else round(value, 3)  # NaN (nothing detected) -> null


def evaluate(run_dir, *, clips: int = 4, frames: int | None = None, seed: int = 0,
             steps: int | None = None, guidance: float | None = None, carry: bool = True) -> dict:
    cfg, data, codec, model, schedule = load_run(run_dir)
    guidance = guidance or cfg.schedule.guidance
    frames = frames or 4 * cfg.data.num_frames
    steps = steps or cfg.schedule.sample_steps
    motion = cfg.schedule.motion_frames
    real, waves, generated, seconds = [], [], [], 0.0
    for i in range(clips):
        video, wave, audio = driving_clip(cfg, data, frames, i)
        began = time.perf_counter()
        with torch.no_grad():
            codes = codec.encode(audio)
        parts = list(iter_long_generation(model, codes, video[None, :, 0], schedule=schedule,
                                          steps=steps, seed=seed + i, guidance=guidance,
                                          carry=carry))
        seconds += time.perf_counter() - began
        generated.append(torch.cat(parts, dim=2)[0])
        real.append(video)
        waves.append(wave)
    gen, real, waves = torch.stack(generated), torch.stack(real), torch.stack(waves)
    sr, fps = cfg.data.sample_rate, cfg.data.fps
    ok = batch_sync_score(gen, waves, sr, fps)
    shuffled = batch_sync_score(gen, waves.roll(1, dims=0), sr, fps)
    truth = batch_sync_score(real, waves, sr, fps)
    return {
        "clips": clips, "frames": frames, "clip_frames": motion, "steps": steps,
        "guidance": guidance, "carry": carry,
        "sync": {"generated": {"score": _rounded(ok.score), "reverse": _rounded(ok.reverse_score)},
                 "generated_vs_shuffled_audio": {"score": _rounded(shuffled.score),
                                                 "reverse": _rounded(shuffled.reverse_score)},
                 "real": {"score": _rounded(truth.score), "reverse": _rounded(truth.reverse_score)}},
        "discontinuity": {"generated": discontinuity(gen, motion),
                          "real": discontinuity(real, motion)},
        "frames_per_second": round(clips * frames / seconds, 2),
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--no-carry", action="store_true",
                        help="ablation: no frame carried over between clips")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = evaluate(args.run_dir, clips=args.clips, frames=args.frames, seed=args.seed,
                      steps=args.steps, guidance=args.guidance, carry=not args.no_carry)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
