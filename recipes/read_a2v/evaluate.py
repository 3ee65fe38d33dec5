"""Evaluate long audio-driven generation: AV-sync, clip-boundary discontinuity, speed.

    python -m recipes.read_a2v.evaluate run_dir=RUN_DIR [clips=4] [frames=64] [seed=0] [carry=false] [out=eval.json]

For each of ``clips`` held-out synthetic clips of ``frames`` frames (default: 4x the training
clips' ``data.num_frames``), the run's pipeline (``RUN_DIR/pipeline``) generates the video from
the clip's first frame and its soundtrack (:meth:`avblocks.pipelines.ReadPipeline.frames`:
the codec, then :func:`avblocks.diffusion.long_generation.iter_long_generation`); then

- **AV-sync** (:func:`recipes.common.evaluation.sync_scores`, tolerance 1 frame): the
  generated videos against their driving audio, against *shuffled* audio (clip ``i``'s video
  with clip ``i+1``'s soundtrack: what an unsynchronised video scores), and the real videos
  against their audio (the ceiling). ``score``: onsets with a bounce nearby; ``reverse``:
  bounces with an onset nearby;
- **discontinuity**: mean absolute difference of consecutive frames (pixels in [-1, 1]) over
  the pairs that straddle a clip boundary (the carried frame and the first new frame of the
  next clip) vs all other pairs (within clips), for the generated and the real videos;
- **speed**: generated frames per second of wall time (codec + sampling, batch 1, one
  process, ``threads`` torch threads, default 1), excluding mp4 encoding.

``carry=false`` is the ablation without READ's overlap (clips joined only by the reference).
"""

import json
import time
from fractions import Fraction

import torch

from avblocks.atomic import atomic_write_json, finite_or_none
from recipes.common.config import parse_cli
from recipes.common.evaluation import sync_scores
from recipes.read_a2v.config import EvaluateConfig
from recipes.read_a2v.generate import driving_clip, load_run

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


def _sync(video: torch.Tensor, waveform: torch.Tensor, sample_rate: int, fps: Fraction) -> dict:
    scores = sync_scores(video, waveform, sample_rate, fps)
    return {"score": _rounded(scores["score"]), "reverse": _rounded(scores["reverse"])}


def evaluate(cfg: EvaluateConfig) -> dict:
    run, pipe = load_run(cfg.run_dir)
    spec, sampling = pipe.spec, pipe.sampling
    frames = cfg.frames or 4 * spec.num_frames
    steps = cfg.steps or sampling.steps
    guidance = cfg.guidance or sampling.guidance
    motion = pipe.denoiser.frames - 1
    real, waves, generated, seconds = [], [], [], 0.0
    for i in range(cfg.clips):
        video, wave = driving_clip(run.data, frames, i)
        began = time.perf_counter()
        with torch.no_grad():
            _, parts = pipe.frames(wave, video[:, 0], frames=frames, steps=steps, guidance=guidance,
                                   seed=cfg.seed + i, carry=cfg.carry)
            generated.append(torch.cat(list(parts), dim=2)[0].cpu())
        seconds += time.perf_counter() - began
        real.append(video)
        waves.append(wave)
    gen, real, waves = torch.stack(generated), torch.stack(real), torch.stack(waves)
    sr = spec.sample_rate
    return {
        "clips": cfg.clips, "frames": frames, "clip_frames": motion, "steps": steps,
        "guidance": guidance, "carry": cfg.carry,
        "sync": {"generated": _sync(gen, waves, sr, spec.fps),
                 "generated_vs_shuffled_audio": _sync(gen, waves.roll(1, dims=0), sr, spec.fps),
                 "real": _sync(real, waves, sr, spec.fps)},
        "discontinuity": {"generated": discontinuity(gen, motion),
                          "real": discontinuity(real, motion)},
        "frames_per_second": round(cfg.clips * frames / seconds, 2),
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> dict:
    cfg = parse_cli(EvaluateConfig, argv, description=__doc__.splitlines()[0])
    torch.set_num_threads(cfg.threads)
    result = evaluate(cfg)
    if cfg.out is not None:
        atomic_write_json(cfg.out, result, nan_as_null=True)
    print(json.dumps(finite_or_none(result), indent=2))
    return result


if __name__ == "__main__":
    main()
