"""The README's main command: train the tiny ProAV-DiT on the synthetic set and sample it.

    make demo        # = avblocks run proav_dit.demo [key=value ...]

Stages (each skipped when its output already exists, so a rerun only redoes what is missing;
delete ``outputs/demo`` to start over):

1. the tiny MDSA autoencoder (``configs/autoencoder_tiny.yaml``), its config's step count;
2. the tiny ST-DiT on its cached latents (``configs/dit_tiny.yaml``), likewise; it saves the self-contained pipeline folder, copied to ``pipeline/``;
3. a small feature network on the synthetic set, for Fréchet / kernel distances;
4. through the saved pipeline, as a user would: ``per_class`` clips per class generated
   jointly, written as mp4 files with sound, PNG previews and a contact sheet; plus the same
   number of audio-to-video clips driven by held-out clips' sound;
5. ``metrics.json``: AV-sync of the generated clips next to real and shuffled clips, the
   feature distances, the autoencoder's reconstruction metrics and the training times; and
   ``sync_from_mp4``: the clips written as mp4, read back and scored by
   :mod:`recipes.common.sync_eval` (event F1 at the exact frame and +-1 frame, AV-Align, onset
   counts and timing, picture integrity; the full table in ``sync_eval/metrics.md``).

Each stage runs its step count whatever the machine's load; ``autoencoder_minutes`` and
``dit_minutes`` are a safety net far above the expected time, and a stage they stop is warned
about and recorded (``steps`` below ``planned_steps`` in ``metrics.json``).

It ends by printing the three lines that sample from the saved pipeline.
"""

import json
import shutil
import time
import warnings
from pathlib import Path

import torch

from avblocks.atomic import atomic_write_json, finite_or_none
from avblocks.pipelines import ProAVDiTPipeline, SoundingVideo
from recipes.common import feature_net, load_config, parse_cli
from recipes.common.data import ClipData
from recipes.common.evaluation import generation_metrics
from recipes.common.sync_eval import SyncEvalConfig, evaluate_sets
from recipes.proav_dit import train_autoencoder, train_dit
from recipes.proav_dit.config import AutoencoderRecipe, DemoConfig, DiTRecipe

CONFIGS = Path(__file__).parent / "configs"

SUMMARY_KEYS = ("event_f1_exact", "event_f1_1frame", "precision_exact", "recall_exact", "onsets", "onset_ratio",
                "timing_error_ms")

THREE_LINES = """from avblocks.pipelines import Pipeline
pipe = Pipeline.from_pretrained("{folder}")
pipe(labels=[0, 1, 2, 3]).save("clip.mp4")"""


def stage(name: str) -> None:
    print(f"\n== {name} ==", flush=True)


def autoencoder_stage(ae_dir: Path, config: Path, overrides: list[str]) -> dict:
    """Train the MDSA into ``ae_dir`` unless its evaluation is there; its held-out metrics."""
    if (ae_dir / "eval" / "metrics.json").is_file():
        return json.loads((ae_dir / "eval" / "metrics.json").read_text())
    cfg = load_config(AutoencoderRecipe, config, [f"run.output_dir={ae_dir}", *overrides])
    return finished_steps(train_autoencoder.train(cfg), cfg.optim.steps, "autoencoder")


def denoiser_stage(dit_dir: Path, ae_dir: Path, config: Path, overrides: list[str]) -> dict:
    """Train the ST-DiT on ``ae_dir``'s latents into ``dit_dir`` unless its pipeline is there."""
    if (dit_dir / "pipeline" / "pipeline.json").is_file():
        return {}
    cfg = load_config(DiTRecipe, config, [f"autoencoder={ae_dir}", f"run.output_dir={dit_dir}", *overrides])
    return finished_steps(train_dit.train(cfg), cfg.optim.steps, "denoiser")


def finished_steps(result: dict, planned: int, stage_name: str) -> dict:
    """Mark a stage the safety-net time cap stopped: its quality is not the documented one."""
    result["planned_steps"] = planned
    if result.get("steps", planned) < planned:
        warnings.warn(f"the {stage_name} stopped at step {result['steps']} of {planned} on its time cap "
                      "(the machine is much slower or busier than expected): the samples will be worse than "
                      "the README's numbers", stacklevel=2)
    return result


def write_clips(out_dir: Path, clips: SoundingVideo, prefix: str) -> None:
    """Each clip as ``prefixXX_classY.mp4`` with its preview PNG, and one contact sheet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(len(clips)):
        name = f"{prefix}{i:02d}_class{int(clips.labels[i])}"
        clips[i].save(out_dir / f"{name}.mp4")
        clips[i].preview(out_dir / f"{name}.png")
    clips.preview(out_dir / f"{prefix}_contact_sheet.png")


def run(cfg: DemoConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    summary: dict = {}
    flag = f"run.progress={str(cfg.progress).lower()}"

    ae_dir = out / "autoencoder"
    stage("1/5 autoencoder")
    summary["autoencoder"] = autoencoder_stage(ae_dir, CONFIGS / "autoencoder_tiny.yaml", [
        f"run.max_minutes={cfg.autoencoder_minutes}", f"run.seed={cfg.seed}", flag, *cfg.autoencoder_overrides])

    dit_dir = out / "dit"
    stage("2/5 ST-DiT denoiser")
    summary["dit"] = denoiser_stage(dit_dir, ae_dir, CONFIGS / "dit_tiny.yaml", [
        f"run.max_minutes={cfg.dit_minutes}", f"run.seed={cfg.seed}", flag, *cfg.dit_overrides])
    folder = out / "pipeline"
    if not (folder / "pipeline.json").is_file():
        shutil.copytree(dit_dir / "pipeline", folder, dirs_exist_ok=True)

    stage("3/5 feature network")
    features = feature_net.load_or_train(out / "features", steps=cfg.feature_steps, seed=cfg.seed,
                                         progress=cfg.progress, overrides=cfg.feature_overrides)

    stage("4/5 sampling through the saved pipeline")
    pipe = ProAVDiTPipeline.from_pretrained(folder)
    labels = torch.arange(pipe.num_classes).repeat_interleave(cfg.per_class)
    options = dict(steps=cfg.sample_steps, cfg_scale=cfg.cfg_scale, progress=cfg.progress)
    joint = pipe(labels=labels, seed=cfg.seed, **options)
    write_clips(out / "samples", joint, "joint")

    data = ClipData(load_config(AutoencoderRecipe, ae_dir / "config.yaml").data)
    real = data.held_out_batch(len(labels))
    real_labels = torch.as_tensor(real["label"])
    a2v = pipe(labels=real_labels, audio=real["audio"], seed=cfg.seed + 1, **options)
    write_clips(out / "samples_audio_to_video", a2v, "a2v")

    stage("5/5 evaluation")
    spec = pipe.spec
    metrics = generation_metrics(joint.video, joint.audio, real["video"], real["audio"],
                                 sample_rate=spec.sample_rate, fps=spec.fps, features=features)
    metrics["sync_audio_to_video"] = generation_metrics(
        a2v.video, real["audio"], real["video"], real["audio"], sample_rate=spec.sample_rate, fps=spec.fps,
    )["sync_generated"]
    # the same clips through mp4 files and back: event F1, AV-Align, onsets, integrity
    if data.config.folder is None:  # the metrics need the synthetic set's ground truth
        sync_cfg = SyncEvalConfig(run_dir=str(out), clips=len(real_labels), seed=cfg.seed, data=data.config)
        files = evaluate_sets(out / "sync_eval", {"joint": joint, "audio_to_video": a2v}, real | {"label": real_labels},
                              spec, sync_cfg, num_classes=pipe.num_classes)
        metrics["sync_from_mp4"] = {
            name: {key: row[key] for key in SUMMARY_KEYS}
            | {"av_align": row["av_align"]["mean"], "integrity": row["integrity"]["score"]}
            for name, row in files["sets"].items()}
    metrics["autoencoder"] = summary.get("autoencoder", {})
    metrics["dit"] = summary.get("dit", {})
    metrics["pipeline"] = str(folder)
    metrics["total_minutes"] = round((time.monotonic() - began) / 60, 2)
    metrics = finite_or_none(metrics)  # a score over no events is undefined: null, not NaN
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def main(argv=None) -> dict:
    cfg = parse_cli(DemoConfig, argv, description=__doc__.splitlines()[0])
    metrics = run(cfg)
    g, r, s = metrics["sync_generated"], metrics["sync_real"], metrics["sync_shuffled"]
    print(json.dumps(metrics, indent=2))
    print(f"\nAV-sync: generated {g['score']:.2f} | real {r['score']:.2f} | shuffled {s['score']:.2f}")
    files = metrics.get("sync_from_mp4", {})
    print("event F1 (exact frame, from mp4): " + " | ".join(
        f"{name} {row['event_f1_exact']:.2f}" for name, row in files.items() if row["event_f1_exact"] is not None))
    print(f"wrote {cfg.output_dir}/samples/*.mp4, contact sheets and metrics.json")
    print(f"\nthe trained model is one folder, {metrics['pipeline']}; sample it in three lines:\n")
    print(THREE_LINES.format(folder=metrics["pipeline"]))
    return metrics


if __name__ == "__main__":
    main()
