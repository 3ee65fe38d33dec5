"""The small feature network for Fréchet / kernel distances on the synthetic set: its training
(the ``features.train`` recipe) and :func:`load_or_train`, which every recipe that reports
distances uses.

    avblocks run features.train [--config FILE] [key=value ...]
    avblocks run features.train optim.steps=400 run.output_dir=outputs/features

The network (:class:`avblocks.metrics.SyntheticFeatureNet`) learns, per modality, the class
label (appearance / timbre) and which frames hold a bounce (motion / timing); its embeddings
are then the features of the demo's FVD/FAD-style numbers. Those numbers are comparable only
with each other (same network weights), never with published FVD/FAD.

Writes to ``run.output_dir``: ``config.yaml`` (the resolved config), ``model/`` (``config.json +
model.safetensors``, load with ``SyntheticFeatureNet.from_pretrained``), ``log.jsonl`` (losses
every ``run.log_every`` steps) and ``report.json``: training time, held-out accuracy (a
synthetic split drawn with ``data.held_out_seed``) and the distance table: Fréchet and kernel
distances between two real held-out splits and between a real split and corrupted copies of
the other one (video frames shuffled / reversed / frozen, pixel noise, colours swapped, image
upside down; audio replaced by noise, noise added, reversed, frames shuffled, pitch raised).

Choices: training clips are drawn fresh from a large synthetic pool (``data.num_clips``
distinct clips; rendering costs under a millisecond per clip, so there is no cache); AdamW with
linear warm-up and cosine decay; one thread unless ``run.threads`` says otherwise; no
checkpoints or resume (a full run takes one to two minutes on a CPU core); ``run.device``
says where it trains (:func:`avblocks.device.resolve_device`; ``auto``: the GPU when there is one).
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Annotated

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from avblocks.atomic import atomic_write, atomic_write_json
from avblocks.config import ConfigError, check_fields
from avblocks.config_rules import SEED, at_least, in_range
from avblocks.data import SyntheticSoundingVideo
from avblocks.device import resolve_device, to_device
from avblocks.metrics.features import (
    distribution_distances,
    extract_audio_features,
    extract_video_features,
)
from avblocks.metrics.synthetic_features import SyntheticFeatureNet, SyntheticFeatureNetConfig
from recipes.common import run_lock
from recipes.common.config import dump_config, load_config, require, require_fits
from recipes.common.data import DataConfig
from recipes.common.estimates import training_state_bytes
from recipes.common.faults import FaultInjection
from recipes.common.schedule import StepBatchSampler, warmup_cosine
from recipes.common.watch import Watch


@dataclass
class FeatureDataConfig:
    num_clips: Annotated[int, at_least(1)] = 16384  # training pool (clip i is a function of (seed, i) only)
    seed: Annotated[int, SEED] = 0
    held_out_seed: Annotated[int, SEED] = 10_000  # accuracy split and the first real split of the table
    second_seed: Annotated[int, SEED] = 20_000  # the second real split of the table
    held_out_clips: Annotated[int, at_least(2)] = 256


@dataclass
class FeatureOptimConfig:
    steps: Annotated[int, at_least(1)] = 400
    batch_size: Annotated[int, at_least(1)] = 16
    lr: Annotated[float, in_range(0, 10, lo_open=True)] = 2e-3
    weight_decay: Annotated[float, in_range(0, 10)] = 1e-4
    warmup: Annotated[int, at_least(0)] = 20
    min_lr_ratio: Annotated[float, in_range(0, 1)] = 0.05
    grad_clip: Annotated[float, at_least(0)] = 1.0  # 0: no clipping


@dataclass
class FeatureRunConfig:
    output_dir: str = "outputs/features"
    seed: Annotated[int, SEED] = 0
    log_every: Annotated[int, at_least(1)] = 50
    threads: Annotated[int, in_range(0, 1024)] = 1  # torch.set_num_threads; 0 leaves PyTorch's default
    distances: bool = True  # write the real-vs-corrupted distance table
    progress: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tensorboard: bool = True  # loss curves, lr, gradient norm, throughput, memory (recipes.common.watch)


@dataclass
class FeatureRecipe:
    data: FeatureDataConfig = field(default_factory=FeatureDataConfig)
    model: SyntheticFeatureNetConfig = field(default_factory=SyntheticFeatureNetConfig)
    optim: FeatureOptimConfig = field(default_factory=FeatureOptimConfig)
    run: FeatureRunConfig = field(default_factory=FeatureRunConfig)


def synthetic_split(model: SyntheticFeatureNetConfig, *, num_clips: int, seed: int) -> Dataset:
    """The synthetic clips the network with ``model``'s settings sees (size, frames, rates)."""
    return SyntheticSoundingVideo(
        num_clips=num_clips, num_frames=model.num_frames, size=model.size, fps=model.fps,
        sample_rate=model.sample_rate, num_classes=model.num_classes, seed=seed,
    )


def load_split(dataset: Dataset) -> dict[str, Tensor]:
    """The whole dataset as one collated batch (held-out splits are small)."""
    return default_collate([dataset[i] for i in range(len(dataset))])


# --------------------------------------------------------------------------------------------
# Corruptions: each takes a batch (video b 3 t h w, or waveform b n with its samples per
# frame) and a generator, and returns a clearly wrong version of it.
# --------------------------------------------------------------------------------------------


def shuffle_frames(video: Tensor, gen: torch.Generator) -> Tensor:
    """Each clip's frames in a random order (same pictures, broken motion)."""
    order = torch.stack([torch.randperm(video.shape[2], generator=gen) for _ in range(len(video))])
    return torch.stack([v[:, o] for v, o in zip(video, order)])


def freeze_frames(video: Tensor, gen: torch.Generator) -> Tensor:
    """The first frame held for the whole clip (no motion)."""
    return video[:, :, :1].expand_as(video).clone()


def reverse_frames(video: Tensor, gen: torch.Generator) -> Tensor:
    """Played backwards. A bounce under gravity looks almost the same backwards, so this one
    is expected to be *hard* to tell apart (an honest row, not a sanity check)."""
    return video.flip(2)


def pixel_noise(video: Tensor, gen: torch.Generator, std: float = 0.3) -> Tensor:
    return (video + std * torch.randn(video.shape, generator=gen)).clamp(-1, 1)


def swap_colours(video: Tensor, gen: torch.Generator) -> Tensor:
    """RGB -> BGR: shapes and motion intact, colours of no class."""
    return video.flip(1)


def upside_down(video: Tensor, gen: torch.Generator) -> Tensor:
    return video.flip(3)


def _rms(waveform: Tensor) -> Tensor:
    return waveform.square().mean(dim=-1, keepdim=True).sqrt()


def noise_audio(waveform: Tensor, gen: torch.Generator, samples_per_frame: int) -> Tensor:
    """White noise with each clip's RMS: no events at all."""
    noise = torch.randn(waveform.shape, generator=gen)
    return (noise * _rms(waveform) / _rms(noise)).clamp(-1, 1)


def add_noise(waveform: Tensor, gen: torch.Generator, samples_per_frame: int, snr_db: float = 10.0) -> Tensor:
    noise = torch.randn(waveform.shape, generator=gen)
    scale = _rms(waveform) / _rms(noise) * 10 ** (-snr_db / 20)
    return (waveform + scale * noise).clamp(-1, 1)


def reverse_audio(waveform: Tensor, gen: torch.Generator, samples_per_frame: int) -> Tensor:
    """Backwards: every decaying event becomes a swell that cuts off."""
    return waveform.flip(-1)


def shuffle_audio_frames(waveform: Tensor, gen: torch.Generator, samples_per_frame: int) -> Tensor:
    """The per-video-frame segments in a random order (events cut and moved)."""
    t = waveform.shape[-1] // samples_per_frame
    segments = waveform[:, : t * samples_per_frame].reshape(len(waveform), t, samples_per_frame)
    order = torch.stack([torch.randperm(t, generator=gen) for _ in range(len(waveform))])
    shuffled = torch.stack([s[o] for s, o in zip(segments, order)]).reshape(len(waveform), -1)
    return torch.cat([shuffled, waveform[:, t * samples_per_frame :]], dim=-1)


def pitch_up(waveform: Tensor, gen: torch.Generator, samples_per_frame: int, factor: float = 1.5) -> Tensor:
    """Played ``factor`` times faster (pitch up, events early and sooner over), zero padded."""
    n = waveform.shape[-1]
    positions = torch.arange(n, dtype=torch.float32) * factor
    left = positions.floor().long().clamp(max=n - 1)
    right = (left + 1).clamp(max=n - 1)
    frac = positions - positions.floor()
    out = waveform[:, left] * (1 - frac) + waveform[:, right] * frac
    return torch.where(positions <= n - 1, out, torch.zeros_like(out))


VIDEO_CORRUPTIONS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "frames shuffled": shuffle_frames,
    "frames reversed": reverse_frames,
    "first frame frozen": freeze_frames,
    "pixel noise (std 0.3)": pixel_noise,
    "colours swapped (RGB->BGR)": swap_colours,
    "upside down": upside_down,
}
AUDIO_CORRUPTIONS: dict[str, Callable[[Tensor, torch.Generator, int], Tensor]] = {
    "replaced by white noise": noise_audio,
    "noise added (10 dB SNR)": add_noise,
    "reversed": reverse_audio,
    "frame segments shuffled": shuffle_audio_frames,
    "pitch up x1.5": pitch_up,
}


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def held_out_accuracy(net: SyntheticFeatureNet, split: dict[str, Tensor], batch_size: int = 64) -> dict:
    """Class accuracy and per-frame event accuracy / F1 of both modalities' heads."""
    net.eval()
    device = next(net.parameters()).device
    logits: dict[str, list[Tensor]] = {}
    for start in range(0, len(split["label"]), batch_size):
        out = net.heads(split["video"][start : start + batch_size].to(device),
                        split["audio"][start : start + batch_size].to(device))
        for k, v in out.items():
            logits.setdefault(k, []).append(v.cpu())
    merged = {k: torch.cat(v) for k, v in logits.items()}
    label, events = split["label"], split["event_frames"]
    report = {}
    for modality in ("video", "audio"):
        report[f"{modality}_class_accuracy"] = float((merged[f"{modality}_class"].argmax(-1) == label).float().mean())
        predicted = merged[f"{modality}_events"] > 0
        tp = float((predicted & events).sum())
        precision = tp / max(1.0, float(predicted.sum()))
        recall = tp / max(1.0, float(events.sum()))
        report[f"{modality}_event_accuracy"] = float((predicted == events).float().mean())
        report[f"{modality}_event_f1"] = 2 * precision * recall / max(1e-12, precision + recall)
    return report


@torch.no_grad()
def distance_table(net: SyntheticFeatureNet, split_a: dict, split_b: dict, *, seed: int = 0) -> list[dict]:
    """Rows ``{"modality", "comparison", "frechet", "kernel"}``: A vs A, A vs B, A vs corrupted B."""
    net.eval()
    rows = []
    sr, spf = net.sample_rate, net.samples_per_frame
    video_a = extract_video_features(net, split_a["video"])
    audio_a = extract_audio_features(net, split_a["audio"], sr)
    gen = torch.Generator().manual_seed(seed)
    video_sets = {"identical (A vs A)": split_a["video"], "real (A vs B)": split_b["video"]}
    video_sets |= {name: fn(split_b["video"], gen) for name, fn in VIDEO_CORRUPTIONS.items()}
    audio_sets = {"identical (A vs A)": split_a["audio"], "real (A vs B)": split_b["audio"]}
    audio_sets |= {name: fn(split_b["audio"], gen, spf) for name, fn in AUDIO_CORRUPTIONS.items()}
    for name, videos in video_sets.items():
        d = distribution_distances(video_a, extract_video_features(net, videos), num_subsets=50)
        rows.append({"modality": "video", "comparison": name, **d})
    for name, waveforms in audio_sets.items():
        d = distribution_distances(audio_a, extract_audio_features(net, waveforms, sr), num_subsets=50)
        rows.append({"modality": "audio", "comparison": name, **d})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'modality':8} {'comparison':30} {'Frechet':>10} {'kernel x1e3':>12}"]
    lines += [
        f"{r['modality']:8} {r['comparison']:30} {r['frechet']:10.3f} {1e3 * r['kernel']:12.3f}"
        for r in rows
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def validate(cfg: FeatureRecipe) -> None:
    """What spans several fields (each field's own bounds are declared on it), and whether the
    run fits in memory: the held-out splits are kept whole, the second one in every corrupted
    copy of the distance table."""
    o, d, m = cfg.optim, cfg.data, cfg.model
    require(o.warmup <= o.steps, f"optim.warmup ({o.warmup}) must be <= optim.steps ({o.steps})")
    require(o.batch_size <= d.num_clips, f"optim.batch_size ({o.batch_size}) must be <= data.num_clips "
            f"({d.num_clips})")
    require_fits(f"shuffling data.num_clips ({d.num_clips}) synthetic clips", 8 * d.num_clips)
    clip = DataConfig(num_frames=m.num_frames, size=m.size, fps=Fraction(m.fps), sample_rate=m.sample_rate,
                      n_fft=m.n_fft, hop=m.hop, n_mels=m.n_mels).clip_bytes()
    copies = 2 + (len(VIDEO_CORRUPTIONS) + len(AUDIO_CORRUPTIONS) if cfg.run.distances else 0)
    require_fits(f"data.held_out_clips ({d.held_out_clips}) x {copies} splits and corrupted copies of "
                 f"model.num_frames ({m.num_frames}) x model.size ({m.size})^2 clips", d.held_out_clips * copies * clip)
    try:  # the clips it trains on
        synthetic_split(m, num_clips=d.num_clips, seed=d.seed)
    except ValueError as e:
        raise ConfigError(f"the synthetic set cannot make the clips model.* describes: {e}") from None
    require_fits("training the network of model.*",
                 training_state_bytes(lambda: SyntheticFeatureNet.from_config(cfg.model)))


def train(cfg: FeatureRecipe) -> tuple[SyntheticFeatureNet, dict]:
    """Check ``cfg`` and resolve ``run.device`` (nothing written yet), hold the run folder's
    lock (:mod:`recipes.common.run_lock`), train and write everything."""
    check_fields(cfg)
    try:
        device = resolve_device(cfg.run.device)
    except ValueError as error:
        raise ConfigError(f"run.device: {error}") from None
    validate(cfg)
    out = Path(cfg.run.output_dir)
    run_lock.hold(out)
    try:
        return _train(cfg, out, device)
    finally:
        run_lock.release(out)


def _train(cfg: FeatureRecipe, out: Path, device: torch.device) -> tuple[SyntheticFeatureNet, dict]:
    dump_config(cfg, out / "config.yaml")
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    net = SyntheticFeatureNet.from_config(cfg.model).to(device)
    o = cfg.optim
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, partial(warmup_cosine, warmup=o.warmup, total=o.steps, min_ratio=o.min_lr_ratio))
    train_set = synthetic_split(cfg.model, num_clips=cfg.data.num_clips, seed=cfg.data.seed)
    sampler = StepBatchSampler(num_items=len(train_set), batch_size=o.batch_size,
                               total_steps=o.steps, seed=cfg.run.seed)
    loader = DataLoader(train_set, batch_sampler=sampler, generator=torch.Generator().manual_seed(cfg.run.seed))

    log_lines: list[str] = []
    faults = FaultInjection.from_env()
    started, started_cpu = time.perf_counter(), time.process_time()
    net.train()
    with Watch(run=cfg.run, out=out, is_main=True, model=net, probes=None, start=0, total=o.steps,
               batch_size=o.batch_size, sharded=False) as watch:
        for step, batch in enumerate(loader):
            batch = to_device(batch, device)
            losses = net.losses(batch["video"], batch["audio"], batch["label"], batch["event_frames"])
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip or float("inf"))
            opt.step()
            sched.step()
            faults.stop(step, losses["total"].detach())
            if (step + 1) % cfg.run.log_every == 0 or step + 1 == o.steps:
                record = {"step": step + 1} | {k: float(v.detach()) for k, v in losses.items() if k != "logits"}
                log_lines.append(json.dumps(record))
                watch.scalars(step, {k: v for k, v in record.items() if k != "step"},
                              lr=sched.get_last_lr()[0], grad_norm=float(grad_norm))
                if cfg.run.progress:
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - started_cpu  # wall time varies with machine load
    net.eval()
    net.save_pretrained(out / "model")
    atomic_write(out / "log.jsonl", lambda p: p.write_text("\n".join(log_lines) + "\n"))

    held_out = load_split(synthetic_split(cfg.model, num_clips=cfg.data.held_out_clips, seed=cfg.data.held_out_seed))
    report: dict = {"train_seconds": train_seconds, "train_cpu_seconds": train_cpu_seconds, "steps": o.steps, "batch_size": o.batch_size,
                    "parameters": sum(p.numel() for p in net.parameters())}
    report["held_out"] = held_out_accuracy(net, held_out)
    if cfg.run.distances:
        second = load_split(synthetic_split(cfg.model, num_clips=cfg.data.held_out_clips, seed=cfg.data.second_seed))
        report["distances"] = distance_table(net, held_out, second, seed=cfg.run.seed)
    atomic_write_json(out / "report.json", report, nan_as_null=True)
    if cfg.run.progress:
        print(f"trained {o.steps} steps in {train_seconds:.1f} s ({train_cpu_seconds:.1f} s CPU); held out: "
              + ", ".join(f"{k}={v:.3f}" for k, v in report["held_out"].items()))
        if "distances" in report:
            print(format_table(report["distances"]))
    return net, report


def load_or_train(folder: str | Path, *, steps: int, seed: int = 0, progress: bool = True,
                  overrides: list[str] | tuple[str, ...] = ()) -> SyntheticFeatureNet:
    """The feature network saved in ``folder/model``, trained there first when it is missing
    (``steps`` steps, no distance table: what the demo and the comparisons need)."""
    folder = Path(folder)
    if (folder / "model" / "config.json").is_file():
        return SyntheticFeatureNet.from_pretrained(folder / "model", device=resolve_device("auto")).eval()
    cfg = load_config(FeatureRecipe, None, [
        f"run.output_dir={folder}", f"optim.steps={steps}", f"optim.warmup={min(steps, FeatureOptimConfig.warmup)}",
        "run.threads=0", "run.distances=false",
        f"run.seed={seed}", f"run.progress={str(progress).lower()}", *overrides])
    return train(cfg)[0].eval()
