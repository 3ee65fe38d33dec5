"""Synchrony measured on the files a user gets: every system's ``evaluate_sync`` entry point.

    avblocks run proav_dit.evaluate_sync run_dir=outputs/demo
    avblocks run av_dit.evaluate_sync run_dir=outputs/av_dit/adapters clips=32
    avblocks run read_a2v.evaluate_sync run_dir=outputs/read_a2v_tiny

Each recipe samples ``clips`` held-out synthetic clips through the run's saved pipeline folder
(``RUN_DIR/pipeline``) in every mode its system has, with the held-out clips' labels (and,
for audio-driven modes, their sound; READ also their first frame), seeds ``seed``,
``seed + 1``, ... per mode. Then, here:

1. the generated clips and the held-out real clips are written as mp4 files (H.264 + AAC,
   ``OUT/<set>/clip_XX.mp4``) and **read back** through :func:`avblocks.data.read_clip`: every
   number is measured on what a user gets;
2. every set is scored (:func:`set_metrics`) next to the real clips, **shuffled** real pairs
   (clip ``i``'s video with clip ``i + 1``'s sound: the chance level) and real pairs with the
   sound **shifted** by ``k`` frames (circularly, ``k`` in ``shifts``): event F1 (exact frame
   and +-1 frame) with precision and recall, the earlier AV-sync score, onset and bounce counts,
   the onset-count ratio against the real clips, the onset timing error (ms), AV-Align, picture
   integrity and, when ``desync_model`` / ``similarity_model`` name local TorchScript exports,
   DeSync and the audio-video similarity (:mod:`avblocks.metrics.learned`);
3. ``OUT/metrics.json`` (atomic; undefined values are ``null``) and ``OUT/metrics.md`` (the
   table) are written; ``OUT`` defaults to ``RUN_DIR/sync_eval``.

The same scores on tensors, without files (training-time evaluation), are :func:`set_metrics`.
"""

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch

from avblocks.atomic import atomic_write_json, atomic_write_text
from avblocks.config_rules import SEED, at_least, in_range
from avblocks.data import read_clip
from avblocks.data.request_bounds import MAX_SAMPLE_RATE
from avblocks.metrics.av_align import FLOWS, pooled_av_align
from avblocks.metrics.events import onset_count_ratio, onset_timing_errors, pooled_event_counts
from avblocks.metrics.integrity import object_integrity
from avblocks.metrics.learned import AVSimilarity, OffsetClassifier
from avblocks.metrics.sync import detect_bounces, detect_onset_samples, pooled_sync_score
from avblocks.pipelines import Pipeline, SoundingVideo
from avblocks.spec import AVSpec
from recipes.common.config import parse_cli, require
from recipes.common.data import ClipData, DataConfig

__all__ = ["SyncEvalConfig", "LearnedModels", "evaluate_sets", "held_out", "read_back", "set_metrics",
           "markdown_table", "open_run", "output_dir", "sync_eval_main", "spec_check", "three_modes"]


@dataclass
class SyncEvalConfig:
    """What every ``<system>.evaluate_sync`` takes (``key=value``)."""

    run_dir: str  # a finished run: its pipeline/ folder is sampled
    # held-out clips (and generated clips per mode); shuffled pairs need two
    clips: Annotated[int, at_least(2)] = 32
    seed: Annotated[int, SEED] = 0  # the first mode samples with seed, the next with seed + 1, ...
    steps: Annotated[int | None, at_least(1)] = None  # sampling steps; None: the pipeline's
    out: str | None = None  # where the mp4s, metrics.json and metrics.md go; None: RUN_DIR/sync_eval
    flow: str = "lucas_kanade"  # AV-Align's optical flow: lucas_kanade (torch) or farneback (OpenCV)
    # frames the real sound is shifted by
    shifts: Annotated[list[int], at_least(1)] = field(default_factory=lambda: [1, 2, 3])
    desync_model: str | None = None  # a local TorchScript DeSync (Synchformer-style) export
    desync_sample_rate: Annotated[int, in_range(1, MAX_SAMPLE_RATE)] = 16000
    similarity_model: str | None = None  # a local TorchScript ImageBind-style export
    similarity_sample_rate: Annotated[int, in_range(1, MAX_SAMPLE_RATE)] = 16000
    threads: Annotated[int, in_range(1, 1024)] = 1  # torch threads (1: steadier on a shared machine)
    progress: bool = False
    data: DataConfig = field(default_factory=DataConfig)  # where the held-out clips come from

    def __post_init__(self) -> None:
        require(self.flow in FLOWS, f"flow ({self.flow!r}) must be one of {FLOWS}")
        require(self.data.folder is None, "data.folder: the sync metrics need the synthetic set's ground truth")


@dataclass
class LearnedModels:
    """The learned sync models a run was given (either may be None: not measured)."""

    desync: OffsetClassifier | None = None
    similarity: AVSimilarity | None = None

    @classmethod
    def from_config(cls, cfg: SyncEvalConfig) -> "LearnedModels":
        desync = similarity = None
        if cfg.desync_model is not None:
            desync = OffsetClassifier(cfg.desync_model, sample_rate=cfg.desync_sample_rate, setting="desync_model")
        if cfg.similarity_model is not None:
            similarity = AVSimilarity(cfg.similarity_model, sample_rate=cfg.similarity_sample_rate,
                                      setting="similarity_model")
        return cls(desync, similarity)


def spec_check(spec: AVSpec, data: DataConfig, folder: "str | os.PathLike[str]") -> None:
    """The pipeline must make the clips the held-out set has (frames, size, rates)."""
    want = data.spec()
    mine = (spec.fps, spec.sample_rate, spec.num_frames, spec.size)
    theirs = (want.fps, want.sample_rate, want.num_frames, want.size)
    require(mine == theirs, f"{folder} makes clips (fps, sample_rate, frames, size) = {mine}; the data section "
            f"describes {theirs}: set data.* to the run's data")


def open_run(cfg: SyncEvalConfig, pipeline_class: type[Pipeline], *, any_length: bool = False):
    """``(pipeline, spec, held-out clips)`` of ``RUN_DIR/pipeline``, checked against the data section
    (``any_length``: the pipeline makes clips of any length; they are made as long as the data's)."""
    folder = Path(cfg.run_dir) / "pipeline"
    pipe = pipeline_class.from_pretrained(folder)
    spec = pipe.spec.with_frames(cfg.data.num_frames) if any_length else pipe.spec
    spec_check(spec, cfg.data, folder)
    return pipe, spec, held_out(cfg)


def three_modes(pipe: Pipeline, real: dict[str, torch.Tensor], cfg: SyncEvalConfig) -> "dict[str, SoundingVideo]":
    """The held-out clips' labels sampled jointly (seed), from their sound (audio-to-video, seed
    + 1) and from their pictures (video-to-audio, seed + 2) by a pipeline that takes all three."""
    labels = real["label"]
    options = dict(steps=cfg.steps, progress=cfg.progress)
    return {
        "joint": pipe(labels=labels, seed=cfg.seed, **options),
        "audio_to_video": pipe(labels=labels, audio=real["audio"], seed=cfg.seed + 1, **options),
        "video_to_audio": pipe(labels=labels, video=real["video"], seed=cfg.seed + 2, **options),
    }


def held_out(cfg: SyncEvalConfig) -> dict[str, torch.Tensor]:
    """The first ``cfg.clips`` held-out synthetic clips (``video``, ``audio``, ``label``)."""
    batch = ClipData(cfg.data).held_out_batch(cfg.clips)
    batch["label"] = torch.as_tensor(batch["label"])
    return batch


def read_back(paths: "list[Path]", spec: AVSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(video b 3 t h w, audio b n)`` decoded from mp4 files at the spec's clip."""
    clips = [read_clip(p, num_frames=spec.num_frames, fps=spec.fps, sample_rate=spec.sample_rate,
                       size=spec.size) for p in paths]
    return torch.stack([c.video for c in clips]), torch.stack([c.audio[0] for c in clips])


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if len(values) else float("nan")


def set_metrics(video: torch.Tensor, audio: torch.Tensor, spec: AVSpec, *, labels: torch.Tensor | None = None,
                num_classes: int = 4, real_onsets: int | None = None, flow: str = "lucas_kanade",
                learned: LearnedModels | None = None) -> dict:
    """Every sync and picture measure of one set of clips (``video b 3 t h w``, ``audio b n``)."""
    sr, fps = spec.sample_rate, spec.fps
    samples = detect_onset_samples(audio, sr, fps)
    onsets = [torch.tensor(sorted({int(s) * fps.numerator // (sr * fps.denominator) for s in clip.tolist()}))
              for clip in samples]
    bounces = detect_bounces(video)
    exact, near = (pooled_event_counts(onsets, bounces, tolerance) for tolerance in (0, 1))
    errors = torch.cat([onset_timing_errors(s, b, sr, fps) for s, b in zip(samples, bounces, strict=True)])
    n_onsets = sum(len(o) for o in onsets)
    out = {
        "event_f1_exact": exact.f1, "precision_exact": exact.precision, "recall_exact": exact.recall,
        "event_f1_1frame": near.f1, "precision_1frame": near.precision, "recall_1frame": near.recall,
        "sync_score": pooled_sync_score(onsets, bounces, 1), "sync_reverse": pooled_sync_score(bounces, onsets, 1),
        "onsets": n_onsets, "bounces": sum(len(b) for b in bounces),
        "onset_ratio": onset_count_ratio(n_onsets, real_onsets) if real_onsets is not None else float("nan"),
        "timing_error_ms": _mean(errors.abs()), "timing_bias_ms": _mean(errors),
        "av_align": pooled_av_align(video, audio, sr, fps, flow=flow),
        "integrity": object_integrity(video, labels, num_classes=num_classes).as_dict(),
    }
    learned = learned or LearnedModels()
    out["desync_s"] = learned.desync.desync(video, audio, sr) if learned.desync else None
    out["av_similarity"] = learned.similarity.score(video, audio, sr) if learned.similarity else None
    return out


def _save(clips: SoundingVideo, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = clips.save(folder / "clip.mp4")
    return written if isinstance(written, list) else [written]


def _shift(audio: torch.Tensor, frames: int, spec: AVSpec) -> torch.Tensor:
    """The sound ``frames`` frames later, circularly (what falls off the end comes first)."""
    return audio.roll(frames * spec.samples_per_frame, dims=-1)


def evaluate_sets(out: Path, generated: "dict[str, SoundingVideo]", real: dict[str, torch.Tensor], spec: AVSpec,
                  cfg: SyncEvalConfig, *, num_classes: int, extra: dict | None = None) -> dict:
    """Write ``generated`` (mode -> clips) and ``real`` (``video``, ``audio``, ``label``) as mp4,
    read them back, score every set next to real, shuffled and shifted pairs; write
    ``metrics.json`` and ``metrics.md`` in ``out``. A set's ``labels`` (or else the real
    clips') are the classes its integrity's class agreement is checked against."""
    labels = real["label"]
    real_clips = SoundingVideo(real["video"], real["audio"], spec, labels)
    video, audio = read_back(_save(real_clips, out / "real"), spec)
    learned = LearnedModels.from_config(cfg)
    options = dict(spec=spec, labels=labels, num_classes=num_classes, flow=cfg.flow, learned=learned)
    sets = {"real": set_metrics(video, audio, **options)}
    real_onsets = sets["real"]["onsets"]
    sets["real"]["onset_ratio"] = 1.0
    for mode, clips in generated.items():
        gen_video, gen_audio = read_back(_save(clips, out / mode), spec)
        asked = clips.labels if clips.labels is not None else labels  # the classes this set was asked for
        sets[mode] = set_metrics(gen_video, gen_audio, real_onsets=real_onsets, **(options | {"labels": asked}))
    sets["shuffled"] = set_metrics(video, audio.roll(1, dims=0), real_onsets=real_onsets, **options)
    for k in cfg.shifts:
        sets[f"shifted_{k}"] = set_metrics(video, _shift(audio, k, spec), real_onsets=real_onsets, **options)
    metrics = {"run_dir": cfg.run_dir, "clips": len(labels), "seed": cfg.seed, "flow": cfg.flow, "fps": str(spec.fps),
               "sample_rate": spec.sample_rate, "sets": sets, "learned_models": {
                   "desync": cfg.desync_model, "similarity": cfg.similarity_model,
                   "note": None if cfg.desync_model and cfg.similarity_model else
                   "a model not given is not measured (null): avblocks ships no Synchformer / ImageBind weights"},
               **(extra or {})}
    atomic_write_json(out / "metrics.json", metrics, nan_as_null=True)
    atomic_write_text(out / "metrics.md", markdown_table(sets) + "\n")
    return metrics


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(sets: dict[str, dict]) -> str:
    """One row per set: event F1 (exact, +-1 frame), the old score, counts, timing, AV-Align, integrity."""
    head = ("| set | F1 exact | P exact | R exact | F1 +-1 | AV-sync (old) | onsets | bounces | onset ratio "
            "| timing ms | AV-Align | integrity |")
    rows = [head, "|---|" + "---:|" * 11]
    for name, m in sets.items():
        rows.append(f"| {name} | {_fmt(m['event_f1_exact'])} | {_fmt(m['precision_exact'])} | "
                    f"{_fmt(m['recall_exact'])} | {_fmt(m['event_f1_1frame'])} | {_fmt(m['sync_score'])} | "
                    f"{m['onsets']} | {m['bounces']} | {_fmt(m['onset_ratio'])} | {_fmt(m['timing_error_ms'], 1)} | "
                    f"{_fmt(m['av_align']['mean'])} | {_fmt(m['integrity']['score'])} |")
    return "\n".join(rows)


def output_dir(cfg: SyncEvalConfig) -> Path:
    return Path(cfg.out) if cfg.out is not None else Path(cfg.run_dir) / "sync_eval"


def sync_eval_main(evaluate: Callable[[SyncEvalConfig], dict], argv, description: str) -> dict:
    """A recipe's ``main``: parse ``key=value``, evaluate, print the summary and the table."""
    cfg = parse_cli(SyncEvalConfig, argv, description=description)
    torch.set_num_threads(cfg.threads)
    metrics = evaluate(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if k != "sets"}))
    print(markdown_table(metrics["sets"]))
    print(f"wrote {output_dir(cfg)}/metrics.json, metrics.md and the mp4 files")
    return metrics
