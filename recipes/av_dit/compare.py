"""AV-DiT next to ProAV-DiT on the synthetic set at equal training minutes: one table.

    python -m recipes.av_dit.compare proav_run=outputs/demo [key=value ...]
    python -m recipes.av_dit.compare --config my_compare.yaml [key=value ...]

``proav_run`` is a ProAV-DiT demo folder, read without any ProAV-DiT recipe code:
``pipeline/`` (the saved :class:`~avblocks.pipelines.ProAVDiTPipeline`),
``autoencoder/config.yaml`` (only its ``data`` section: the clips both systems train and are
scored on), ``metrics.json`` (each stage's ``train_minutes``) and, when present, ``features/``
(the feature network). The AV-DiT stages are trained here, on that data section, under
wall-time budgets taken from that run:

- image autoencoder: the ProAV-DiT autoencoder's minutes;
- image-DiT pretraining + adapters: the ProAV-DiT denoiser's minutes, split by
  ``pretrain_fraction``. AV-DiT's pretraining is a stand-in for ImageNet pretraining, which
  the paper gets for free; charging it to AV-DiT's budget is the strict reading of "equal
  training minutes" (set ``pretrain_fraction`` to 0 and give ``pretrain_minutes`` to
  charge it nothing).

Each stage is skipped when its ``result.json`` exists (written when it finished), so a rerun
only evaluates. Both pipelines then generate ``per_class`` clips per class with the same
labels, using the same number of model evaluations (ProAV-DiT: Heun, ``sample_steps`` steps =
2 x ``sample_steps`` evaluations; AV-DiT: DDIM, 2 x ``sample_steps`` steps) and the same
guidance scale, and are scored against the same held-out real clips by
:func:`recipes.common.evaluation.generation_metrics`: AV-sync (onsets with a bounce within a
frame; real and shuffled clips for scale) and Fréchet / kernel distances of the
synthetic-set feature network (the ProAV-DiT run's, or one trained here).

Writes ``output_dir``: ``compare.json`` (undefined scores as null), ``compare.md`` (the
side-by-side table), mp4 samples and a contact sheet of both systems, and the AV-DiT stage
folders (``adapters/pipeline`` is the AV-DiT pipeline that was scored).
"""

import dataclasses
import json
import time
from pathlib import Path

import torch
import yaml

from avblocks.atomic import atomic_write_json, atomic_write_text
from avblocks.config import config_from_dict
from avblocks.metrics.synthetic_features import SyntheticFeatureNet
from avblocks.pipelines import AVDiTPipeline, ProAVDiTPipeline, SoundingVideo
from recipes.av_dit import pretrain, train, train_autoencoder
from recipes.av_dit.config import AutoencoderRecipe, AVDiTRecipe, CompareConfig, PretrainRecipe
from recipes.common import feature_net, load_config, parse_cli, require
from recipes.common.data import ClipData, DataConfig
from recipes.common.evaluation import generation_metrics

CONFIGS = Path(__file__).parent / "configs"


def proav_minutes(cfg: CompareConfig) -> tuple[float, float]:
    """The ProAV-DiT run's ``(autoencoder, denoiser)`` training minutes."""
    ae, dit = cfg.proav_autoencoder_minutes, cfg.proav_dit_minutes
    metrics_file = Path(cfg.proav_run) / "metrics.json"
    if (ae <= 0 or dit <= 0) and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        ae = ae if ae > 0 else float(metrics.get("autoencoder", {}).get("train_minutes", 0.0))
        dit = dit if dit > 0 else float(metrics.get("dit", {}).get("train_minutes", 0.0))
    if ae <= 0 or dit <= 0:
        raise ValueError(f"training minutes of the ProAV-DiT run unknown (autoencoder {ae}, denoiser {dit}): "
                         f"give proav_autoencoder_minutes and proav_dit_minutes, or a demo folder with "
                         f"metrics.json (looked for {metrics_file})")
    return ae, dit


def proav_data(proav_run: str | Path) -> DataConfig:
    """The ``data`` section of ``proav_run/autoencoder/config.yaml``, read as plain YAML."""
    path = Path(proav_run) / "autoencoder" / "config.yaml"
    require(path.is_file(), f"{path} does not exist: proav_run must be a ProAV-DiT demo folder")
    tree = yaml.safe_load(path.read_text())
    require(isinstance(tree, dict) and isinstance(tree.get("data"), dict), f"{path} has no data section")
    return config_from_dict(DataConfig, tree["data"])


def _stage(folder: Path, recipe_class, config_file: str, overrides: list[str], trainer, **replace) -> dict:
    """Train one AV-DiT stage unless it finished before; its result is kept in result.json."""
    if (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    cfg = dataclasses.replace(load_config(recipe_class, CONFIGS / config_file, overrides), **replace)
    result = trainer(cfg)
    atomic_write_json(folder / "result.json", result, nan_as_null=True)
    return result


def _features(cfg: CompareConfig, out: Path) -> SyntheticFeatureNet:
    """The ProAV-DiT run's feature network when it has one, else one trained here."""
    theirs = Path(cfg.proav_run) / "features"
    folder = theirs if (theirs / "model" / "config.json").is_file() else out / "features"
    return feature_net.load_or_train(folder, steps=cfg.feature_steps, seed=cfg.seed,
                                     progress=cfg.progress, overrides=cfg.feature_overrides)


def _save_samples(folder: Path, clips: SoundingVideo, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    clips.save(folder / f"{name}.mp4")
    clips.preview(folder / f"{name}_contact_sheet.png")


def _row(name: str, av, proav, fmt: str = "{:.3f}") -> str:
    cell = lambda v: fmt.format(v) if isinstance(v, (int, float)) else str(v)  # noqa: E731
    return f"| {name} | {cell(av)} | {cell(proav)} |"


def table(report: dict) -> str:
    av, pro = report["av_dit"], report["proav_dit"]
    ma, mp = av["metrics"], pro["metrics"]
    real, shuffled = mp["sync_real"]["score"], mp["sync_shuffled"]["score"]
    lines = [
        "| | AV-DiT | ProAV-DiT |", "|---|---|---|",
        _row("training minutes, total", av["minutes"]["total"], pro["minutes"]["total"], "{:.2f}"),
        _row("  autoencoder / pretraining / denoiser",
             f"{av['minutes']['autoencoder']:.2f} / {av['minutes']['pretrain']:.2f} / {av['minutes']['adapters']:.2f}",
             f"{pro['minutes']['autoencoder']:.2f} / - / {pro['minutes']['denoiser']:.2f}"),
        _row("denoiser parameters trained / total",
             f"{av['parameters']['trainable']:,} / {av['parameters']['total']:,} "
             f"({100 * av['parameters']['trainable_share']:.1f}%)",
             f"{pro['parameters']['trainable']:,} / {pro['parameters']['total']:,} (100%)"),
        _row(f"AV-sync score (real {real:.2f}, shuffled {shuffled:.2f})",
             ma["sync_generated"]["score"], mp["sync_generated"]["score"], "{:.2f}"),
        _row("AV-sync reverse (bounces with an onset)", ma["sync_generated"]["reverse"],
             mp["sync_generated"]["reverse"], "{:.2f}"),
    ]
    for key, name in (("video_frechet", "video Fréchet distance"), ("video_kernel", "video kernel distance"),
                      ("audio_frechet", "audio Fréchet distance"), ("audio_kernel", "audio kernel distance")):
        if key in ma:
            lines.append(_row(name, ma[key], mp[key]))
    return "\n".join(lines) + "\n"


def run(cfg: CompareConfig) -> dict:
    cfg.validate()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    proav = Path(cfg.proav_run)
    ae_minutes, dit_minutes = proav_minutes(cfg)
    data = ClipData(proav_data(proav))
    proav_pipe = ProAVDiTPipeline.from_pretrained(proav / "pipeline")
    if proav_pipe.spec != data.spec:
        raise ValueError(f"{proav / 'pipeline'} makes clips of {proav_pipe.spec}, but its autoencoder was "
                         f"trained on {data.spec}")
    pre_minutes = cfg.pretrain_minutes if cfg.pretrain_minutes > 0 else cfg.pretrain_fraction * dit_minutes
    adapter_minutes = dit_minutes - (0.0 if cfg.pretrain_minutes > 0 else pre_minutes)
    flag = f"run.progress={str(cfg.progress).lower()}"

    ae_dir, pre_dir, av_dir = out / "autoencoder", out / "pretrain", out / "adapters"
    results = {
        "autoencoder": _stage(ae_dir, AutoencoderRecipe, "autoencoder_tiny.yaml",
                              [f"run.output_dir={ae_dir}", f"run.max_minutes={ae_minutes}", flag,
                               *cfg.autoencoder_overrides], train_autoencoder.train, data=data.config),
        "pretrain": _stage(pre_dir, PretrainRecipe, "pretrain_tiny.yaml",
                           [f"autoencoder={ae_dir}", f"run.output_dir={pre_dir}", f"run.max_minutes={pre_minutes}",
                            flag, *cfg.pretrain_overrides], pretrain.train),
        "adapters": _stage(av_dir, AVDiTRecipe, "av_dit_tiny.yaml",
                           [f"autoencoder={ae_dir}", f"pretrained={pre_dir}", f"run.output_dir={av_dir}",
                            f"run.max_minutes={adapter_minutes}", flag, *cfg.adapter_overrides], train.train),
    }
    av_pipe = AVDiTPipeline.from_pretrained(av_dir / "pipeline")
    features = _features(cfg, out)

    labels = torch.arange(data.num_classes).repeat_interleave(cfg.per_class)
    real = data.held_out_batch(len(labels))
    options = dict(cfg_scale=cfg.cfg_scale, seed=cfg.seed, progress=cfg.progress)
    av_clips = av_pipe(labels=labels, steps=2 * cfg.sample_steps, sampler="ddim", **options)
    proav_clips = proav_pipe(labels=labels, steps=cfg.sample_steps, sampler="heun", **options)
    _save_samples(out / "samples_av_dit", av_clips, "av_dit")
    _save_samples(out / "samples_proav_dit", proav_clips, "proav_dit")

    def scores(clips: SoundingVideo) -> dict:
        return generation_metrics(clips.video, clips.audio, real["video"], real["audio"],
                                  sample_rate=data.spec.sample_rate, fps=data.spec.fps, features=features)

    proav_params = sum(p.numel() for p in proav_pipe.denoiser.parameters())  # ProAV-DiT trains all of them
    minutes = {k: float(v.get("train_minutes", 0.0)) for k, v in results.items()}
    report = {
        "av_dit": {"metrics": scores(av_clips), "parameters": av_pipe.denoiser.parameter_counts(),
                   "minutes": {**minutes, "total": round(sum(minutes.values()), 2)},
                   "budget_minutes": {"autoencoder": ae_minutes, "pretrain": pre_minutes, "adapters": adapter_minutes}},
        "proav_dit": {"metrics": scores(proav_clips),
                      "parameters": {"trainable": proav_params, "total": proav_params},
                      "minutes": {"autoencoder": ae_minutes, "denoiser": dit_minutes,
                                  "total": round(ae_minutes + dit_minutes, 2)}},
        "clips": len(labels), "proav_run": str(proav), "sample_evaluations": 2 * cfg.sample_steps,
        "cfg_scale": cfg.cfg_scale,
    }
    report["table"] = table(report)
    report["compare_minutes"] = round((time.monotonic() - began) / 60, 2)
    atomic_write_json(out / "compare.json", report, nan_as_null=True)  # a score over no events: null
    atomic_write_text(out / "compare.md",
                      f"# AV-DiT vs ProAV-DiT ({len(labels)} clips each, synthetic set)\n\n{report['table']}")
    return report


def main(argv=None) -> dict:
    cfg = parse_cli(CompareConfig, argv, description=__doc__.splitlines()[0])
    report = run(cfg)
    print(report["table"])
    print(f"wrote {cfg.output_dir}/compare.md, compare.json and samples of both systems")
    return report


if __name__ == "__main__":
    main()
