"""AV-sync of a trained dual-stream run: joint, audio-to-video and video-to-audio, held-out clips.

    avblocks run dual_stream.evaluate run_dir=outputs/dual_stream_tiny clips=32

The run's pipeline samples one clip per held-out clip and mode with the held-out clips'
labels: jointly (both streams generated; scored as generated), audio-to-video (the held-out
audio held clean; the generated video scored with the real audio) and video-to-audio (the
converse). Scores (:func:`recipes.common.evaluation.sync_scores`): the fraction of audio
onsets with a visual bounce within one frame, the reverse fraction, and the onsets / bounces
detected; the real clips and the shuffled real pairs (each video with the next clip's audio:
the chance level) give the scale. Writes ``eval.json`` (or ``out``) and prints a table.
"""

import json
import time
from pathlib import Path

import torch

from avblocks.atomic import atomic_write_json
from avblocks.pipelines import DualStreamPipeline
from recipes.common import load_config, parse_cli
from recipes.common.data import ClipData
from recipes.common.evaluation import generation_metrics, sync_scores
from recipes.dual_stream.config import DualStreamRecipe, EvaluateConfig

MODES = ("joint", "a2v", "v2a")


def evaluate(cfg: EvaluateConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    run = Path(cfg.run_dir)
    if not (run / "config.yaml").is_file() or not (run / "pipeline").is_dir():
        raise FileNotFoundError(f"{run} is not a finished dual-stream run (config.yaml and pipeline/)")
    data = ClipData(load_config(DualStreamRecipe, run / "config.yaml").data)
    pipe = DualStreamPipeline.from_pretrained(run / "pipeline")
    batch = data.held_out_batch(cfg.clips)
    video, audio, labels = data.model_inputs(batch)
    sr, fps = data.spec.sample_rate, data.spec.fps
    steps = cfg.steps or pipe.sampling.steps
    reference = generation_metrics(batch["video"], batch["audio"], batch["video"], batch["audio"],
                                   sample_rate=sr, fps=fps)
    report = {"real": reference["sync_real"], "shuffled": reference["sync_shuffled"], "steps": steps,
              "clips": len(labels), "modes": {}}
    for mode in MODES:
        began = time.monotonic()
        given = {"a2v": {"audio": audio}, "v2a": {"video": video}}.get(mode, {})
        gen_video, frames = pipe.sample_streams(labels, steps=steps, sampler=pipe.sampling.sampler,
                                                cfg_scale=pipe.sampling.cfg_scale, seed=cfg.seed,
                                                progress=False, **given)
        gen_video, wave = pipe.codec.decode(gen_video, frames)
        if mode == "a2v":
            wave = batch["audio"]
        if mode == "v2a":
            gen_video = batch["video"]
        report["modes"][mode] = sync_scores(gen_video, wave, sr, fps) | {
            "seconds": round(time.monotonic() - began, 1)}
    atomic_write_json(Path(cfg.out) if cfg.out else run / "eval.json", report, nan_as_null=True)
    return report


def table(report: dict) -> str:
    rows = ["| clips | AV-sync | reverse | onsets | bounces |", "|---|---:|---:|---:|---:|"]
    named = [("real", report["real"]), ("shuffled real pairs", report["shuffled"]),
             *((f"generated, {mode}", s) for mode, s in report["modes"].items())]
    for name, s in named:
        rows.append(f"| {name} | {s['score']:.2f} | {s['reverse']:.2f} | {s['onsets']} | {s['bounces']} |")
    return "\n".join(rows)


def main(argv=None) -> dict:
    report = evaluate(parse_cli(EvaluateConfig, argv, description=__doc__.splitlines()[0]))
    print(table(report))
    print(json.dumps({mode: round(s["score"], 3) for mode, s in report["modes"].items()}))
    return report


if __name__ == "__main__":
    main()
