"""AV-DiT next to ProAV-DiT on the synthetic set at equal training minutes: one table.

    python -m recipes.av_dit.compare proav_run=outputs/demo [key=value ...]

``proav_run`` is a ProAV-DiT demo folder (:mod:`recipes.proav_dit.demo`: ``autoencoder/``,
``dit/``, ``metrics.json`` with each stage's training minutes, and ``features/``). The AV-DiT
stages are trained here, on the same data config, under wall-time budgets taken from that run:

- image autoencoder: the ProAV-DiT autoencoder's minutes;
- image-DiT pretraining + adapters: the ProAV-DiT denoiser's minutes, split by
  ``pretrain_fraction``. AV-DiT's pretraining is a stand-in for ImageNet pretraining, which
  the paper gets for free; charging it to AV-DiT's budget is the strict reading of "equal
  training minutes" (set ``pretrain_fraction`` to 0 and give ``pretrain_minutes`` to
  charge it nothing).

Each stage is skipped when its ``model/`` already exists (a rerun only evaluates). Both
systems then generate ``per_class`` clips per class with the same labels, using the same
number of model evaluations (ProAV-DiT: Heun, ``sample_steps`` steps = 2 x ``sample_steps``
evaluations; AV-DiT: DDIM, 2 x ``sample_steps`` steps) and the same guidance scale, and are
scored against the same held-out real clips by :func:`recipes.common.evaluation.generation_metrics`:
AV-sync (onsets with a bounce within a frame; real and shuffled clips for scale) and Fréchet /
kernel distances of the synthetic-set feature network (the ProAV-DiT run's, or one trained here).

Writes ``output_dir``: ``compare.json``, ``compare.md`` (the side-by-side table), mp4 samples
of both systems, and the AV-DiT stage folders.
"""

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avblocks.atomic import atomic_path
from avblocks.dit.adapter_io import count_parameters
from avblocks.dit.stdit import STDiT
from avblocks.metrics.synthetic_features import SyntheticFeatureNet
from recipes.av_dit import pretrain, train, train_autoencoder
from recipes.av_dit.sample import generate as av_generate
from recipes.av_dit.sample import render as av_render
from recipes.common import feature_net, load_config, parse_cli
from recipes.common.evaluation import generation_metrics
from recipes.proav_dit import train_dit
from recipes.proav_dit.latents import LatentSpace
from recipes.proav_dit.sample import generate as proav_generate
from recipes.proav_dit.sample import render as proav_render
from recipes.proav_dit.sample import write_samples

CONFIGS = Path(__file__).parent / "configs"


@dataclass
class CompareConfig:
    output_dir: str = "outputs/av_dit/compare"
    proav_run: str = "outputs/demo"
    proav_autoencoder_minutes: float = 0.0  # 0: read from proav_run/metrics.json
    proav_dit_minutes: float = 0.0  # 0: read from proav_run/metrics.json
    pretrain_fraction: float = 0.5  # share of the denoiser minutes spent pretraining the image DiT
    pretrain_minutes: float = 0.0  # > 0: this budget instead (not charged to AV-DiT's share)
    autoencoder_overrides: list[str] = field(default_factory=list)
    pretrain_overrides: list[str] = field(default_factory=list)
    adapter_overrides: list[str] = field(default_factory=list)
    feature_overrides: list[str] = field(default_factory=list)
    feature_steps: int = 200
    per_class: int = 4
    sample_steps: int = 16
    cfg_scale: float = 1.0  # the ProAV-DiT demo's scale
    seed: int = 0
    progress: bool = True


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


def _stage(folder: Path, recipe_class, config_file: str, overrides: list[str], data, trainer) -> dict:
    """Train one AV-DiT stage unless ``folder/model`` exists; its result is kept in result.json."""
    if (folder / "model" / "config.json").is_file() and (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    cfg = load_config(recipe_class, CONFIGS / config_file, overrides)
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data)
    result = trainer(cfg)
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _features(cfg: CompareConfig, out: Path) -> SyntheticFeatureNet:
    """The ProAV-DiT run's feature network when it has one, else one trained here."""
    theirs = Path(cfg.proav_run) / "features"
    folder = theirs if (theirs / "model" / "config.json").is_file() else out / "features"
    return feature_net.load_or_train(folder, steps=cfg.feature_steps, seed=cfg.seed,
                                        progress=cfg.progress, overrides=cfg.feature_overrides)


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
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    proav = Path(cfg.proav_run)
    ae_minutes, dit_minutes = proav_minutes(cfg)
    dit_cfg = load_config(train_dit.DiTRecipe, proav / "dit" / "config.yaml")
    space = LatentSpace.from_run(dit_cfg.autoencoder, multiple=dit_cfg.model.patch)
    data_cfg = space.data.config
    pre_minutes = cfg.pretrain_minutes if cfg.pretrain_minutes > 0 else cfg.pretrain_fraction * dit_minutes
    adapter_minutes = dit_minutes - (0.0 if cfg.pretrain_minutes > 0 else pre_minutes)
    flag = f"run.progress={str(cfg.progress).lower()}"

    ae_dir, pre_dir, av_dir = out / "autoencoder", out / "pretrain", out / "adapters"
    results = {
        "autoencoder": _stage(ae_dir, train_autoencoder.AutoencoderRecipe, "autoencoder_tiny.yaml",
                              [f"run.output_dir={ae_dir}", f"run.max_minutes={ae_minutes}", flag,
                               *cfg.autoencoder_overrides], data_cfg, train_autoencoder.train)}
    if pre_minutes > 0:
        results["pretrain"] = _stage(pre_dir, pretrain.PretrainRecipe, "pretrain_tiny.yaml",
                                     [f"autoencoder={ae_dir}", f"run.output_dir={pre_dir}",
                                      f"run.max_minutes={pre_minutes}", flag, *cfg.pretrain_overrides],
                                     None, pretrain.train)
    else:
        raise ValueError("AV-DiT needs a pretrained image DiT: pretrain_fraction or pretrain_minutes > 0")
    results["adapters"] = _stage(av_dir, train.AVDiTRecipe, "av_dit_tiny.yaml",
                                 [f"autoencoder={ae_dir}", f"pretrained={pre_dir}", f"run.output_dir={av_dir}",
                                  f"run.max_minutes={adapter_minutes}", flag, *cfg.adapter_overrides],
                                 None, train.train)
    features = _features(cfg, out)

    labels = torch.arange(space.data.num_classes).repeat_interleave(cfg.per_class)
    real = space.data.held_out_batch(len(labels))
    c = data_cfg
    scores = lambda v, w: generation_metrics(v, w, real["video"], real["audio"], sample_rate=c.sample_rate,  # noqa: E731
                                             fps=c.fps, features=features)

    av_cfg, av_space, av_model = train.load_run(av_dir)
    latent = av_generate(av_space, av_model, pretrain.build_ddpm(av_cfg.diffusion), labels,
                         steps=2 * cfg.sample_steps, cfg_scale=cfg.cfg_scale, seed=cfg.seed, progress=cfg.progress)
    av_video, av_wave = av_render(av_space, latent)
    write_samples(out / "samples_av_dit", av_space, av_video, av_wave, labels, prefix="av_dit")

    denoiser = STDiT.from_pretrained(proav / "dit" / "model")
    latent = proav_generate(space, denoiser, labels, steps=cfg.sample_steps, cfg_scale=cfg.cfg_scale,
                            seed=cfg.seed, progress=cfg.progress)
    pro_video, pro_wave = proav_render(space, latent)
    write_samples(out / "samples_proav_dit", space, pro_video, pro_wave, labels, prefix="proav_dit")

    denoiser_params = count_parameters(denoiser)
    minutes = {k: float(v.get("train_minutes", 0.0)) for k, v in results.items()}
    report = {
        "av_dit": {"metrics": scores(av_video, av_wave), "parameters": av_model.parameter_counts(),
                   "minutes": {**minutes, "total": round(sum(minutes.values()), 2)},
                   "budget_minutes": {"autoencoder": ae_minutes, "pretrain": pre_minutes, "adapters": adapter_minutes}},
        "proav_dit": {"metrics": scores(pro_video, pro_wave),
                      "parameters": {"trainable": denoiser_params[0], "total": denoiser_params[1]},
                      "minutes": {"autoencoder": ae_minutes, "denoiser": dit_minutes,
                                  "total": round(ae_minutes + dit_minutes, 2)}},
        "clips": len(labels), "proav_run": str(proav), "sample_evaluations": 2 * cfg.sample_steps,
        "cfg_scale": cfg.cfg_scale,
    }
    report["table"] = table(report)
    report["compare_minutes"] = round((time.monotonic() - began) / 60, 2)
    with atomic_path(out / "compare.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(f"# AV-DiT vs ProAV-DiT ({len(labels)} clips each, synthetic set)\n\n{report['table']}")
    return report


def main(argv=None) -> dict:
    cfg = parse_cli(CompareConfig, argv, description=__doc__.splitlines()[0])
    report = run(cfg)
    print(report["table"])
    print(f"wrote {cfg.output_dir}/compare.md, compare.json and samples of both systems")
    return report


if __name__ == "__main__":
    main()
