"""Every config of the READ recipe: the trainer's sections, their checks, and the entry points'.

- :class:`ReadRecipe` (``python -m recipes.read_a2v.train --config FILE key=value ...``): the
  ``data`` section shared by every recipe (:class:`recipes.common.data.DataConfig`), the audio
  codec, the denoiser, the asynchronous schedule, one optimizer section per training stage and
  the run; :func:`validate` checks what spans several fields before anything is built.
- :class:`GenerateConfig` and :class:`EvaluateConfig`: what ``recipes.read_a2v.generate`` and
  ``recipes.read_a2v.evaluate`` take (``run_dir=... frames=64 out=long.mp4``).

Nothing here imports a trainer, so every module of the recipe can import its config.
"""

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Annotated

from avblocks.config_rules import CHANGEABLE, SEED, WEIGHT, above, at_least, in_range
from recipes.common import loop
from recipes.common.config import require
from recipes.common.data import DataConfig, check_batch, check_data
from recipes.common.loop import check_optim
from recipes.common.speed import SpeedConfig

__all__ = [
    "CodecConfig",
    "DenoiserConfig",
    "EvaluateConfig",
    "GenerateConfig",
    "SpeakConfig",
    "OptimConfig",
    "ReadRecipe",
    "RunConfig",
    "ScheduleConfig",
    "validate",
]


@dataclass
class CodecConfig:
    strides: Annotated[tuple[int, ...], at_least(1)] = (2, 5)  # product = spectrogram columns per video frame
    hidden_channels: Annotated[int, at_least(1)] = 64
    code_dim: Annotated[int, at_least(1)] = 32
    video_hidden: Annotated[int, at_least(1)] = 32
    temperature: Annotated[float, in_range(1e-3, 100)] = 0.1
    contrastive_weight: Annotated[float, WEIGHT] = 1.0


@dataclass
class DenoiserConfig(SpeedConfig):
    patch: Annotated[int, at_least(1)] = 4
    hidden_size: Annotated[int, at_least(1)] = 64
    depth: Annotated[int, at_least(1)] = 3
    num_heads: Annotated[int, at_least(1)] = 4
    mlp_ratio: Annotated[float, in_range(0, 64, lo_open=True)] = 2.0
    window: Annotated[int, at_least(0)] = 1
    audio_modulation: bool = False  # each frame's code also enters that frame's adaLN conditioning
    # loss weight + 1 of the pixels where a frame differs from its reference
    object_weight: Annotated[float, at_least(0)] = 0.0
    clean_loss: bool = False  # weight each frame's velocity error by t^2: the error of the clean frame
    # probability a training example hears no audio (for guidance)
    audio_dropout: Annotated[float, in_range(0, 1, hi_open=True)] = 0.1


@dataclass
class ScheduleConfig:
    # frames generated per clip (the reference comes on top); one overlaps the previous clip
    motion_frames: Annotated[int, at_least(2)] = 8
    lag: Annotated[int, at_least(1)] = 1  # levels the first motion frame is ahead of the rest
    # sampling steps; one level = 1 / sample_steps in training too
    sample_steps: Annotated[int, at_least(1)] = 10
    guidance: Annotated[float, above(0)] = 1.0  # audio classifier-free guidance scale at sampling (1: none)
    time_distribution: str = "uniform"
    logit_mean: Annotated[float, in_range(-10, 10)] = 0.0
    logit_std: Annotated[float, in_range(0, 10, lo_open=True)] = 1.0
    shift: Annotated[float, above(0)] = 1.0


@dataclass
class OptimConfig(loop.OptimConfig):
    """:class:`recipes.common.loop.OptimConfig` with READ's defaults (each stage has its own)."""

    steps: Annotated[int, at_least(0), CHANGEABLE] = 600  # 0 skips the stage
    ema_decay: float = 0.99


@dataclass
class RunConfig(loop.RunConfig):
    """:class:`recipes.common.loop.RunConfig` with READ's defaults; ``max_minutes`` is per stage."""

    output_dir: str = "outputs/read_a2v"
    keep_checkpoints: int = 2


@dataclass
class ReadRecipe:
    data: DataConfig = field(default_factory=lambda: DataConfig(num_clips=256))
    codec: CodecConfig = field(default_factory=CodecConfig)
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    codec_optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=300))
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def validate(cfg: ReadRecipe, world_size: int = 1) -> None:
    """Cross-field constraints, checked before anything is built; the error names the fields."""
    d, s, m = cfg.data, cfg.schedule, cfg.model
    require(world_size == 1, f"recipes.read_a2v.train runs on one process (no torchrun); got {world_size}")
    require(d.folder is None, "data.folder: this recipe trains on the synthetic set only")
    require(s.motion_frames <= d.num_frames,
            f"schedule.motion_frames ({s.motion_frames}) must lie in [1, data.num_frames={d.num_frames}]")
    require(s.lag <= s.sample_steps,
            f"schedule.lag ({s.lag}) must lie in [1, schedule.sample_steps={s.sample_steps}]")
    require(d.size % m.patch == 0, f"model.patch ({m.patch}) must divide data.size ({d.size})")
    require(m.hidden_size % m.num_heads == 0,
            f"model.num_heads ({m.num_heads}) must divide model.hidden_size ({m.hidden_size})")
    check_data(d)
    spf = Fraction(d.sample_rate) / d.fps
    require(spf.denominator == 1 and spf.numerator % d.hop == 0,
            f"data.hop ({d.hop}) must divide the samples per frame ({spf} = data.sample_rate / data.fps)")
    columns = spf.numerator // d.hop
    prod = 1
    for stride in cfg.codec.strides:
        prod *= stride
    require(prod == columns, f"the product of codec.strides {tuple(cfg.codec.strides)} ({prod}) must "
            f"equal the spectrogram columns per frame ({columns} = sample_rate / fps / hop)")
    for name, o in (("codec_optim", cfg.codec_optim), ("optim", cfg.optim)):
        check_optim(o, name, world_size=world_size)
        check_batch(o.batch_size, d, f"{name}.batch_size")


@dataclass
class GenerateConfig:
    """``recipes.read_a2v.generate``: a trained run's pipeline driven by a held-out clip."""

    run_dir: str  # a finished training run (its config.yaml and pipeline/)
    frames: Annotated[int, at_least(1)] = 64  # video frames to generate (the held-out clip is made this long)
    clip: Annotated[int, at_least(0)] = 0  # which held-out clip drives it (its soundtrack and first frame)
    seed: Annotated[int, SEED] = 0
    steps: Annotated[int | None, at_least(1)] = None  # sampling steps per clip; None: the pipeline's
    guidance: Annotated[float | None, above(0)] = None  # audio guidance scale; None: the pipeline's
    out: str = "read_long.mp4"


@dataclass
class EvaluateConfig:
    """``recipes.read_a2v.evaluate``: AV-sync, clip-boundary discontinuity and speed of a run."""

    run_dir: str  # a finished training run (its config.yaml and pipeline/)
    # held-out clips to generate (the shuffled-audio baseline pairs clip i's video with clip i+1's sound)
    clips: Annotated[int, at_least(2)] = 4
    frames: Annotated[int | None, at_least(1)] = None  # frames per generated video; None: 4x the training clips'
    seed: Annotated[int, SEED] = 0  # clip i is sampled with seed + i
    steps: Annotated[int | None, at_least(1)] = None  # sampling steps per clip; None: the pipeline's
    guidance: Annotated[float | None, above(0)] = None  # audio guidance scale; None: the pipeline's
    carry: bool = True  # False: the ablation with no frame carried between clips
    threads: Annotated[int, at_least(1)] = 1  # torch threads (1: steadier on a shared machine)
    out: str | None = None  # also write the report here (JSON)


@dataclass
class SpeakConfig:
    """``recipes.read_a2v.speak``: real speech (Piper, offline) to drive a READ pipeline."""

    text: str = "Hello! This voice was made by Piper, offline, and it drives the video frame by frame."
    out: str = "speech.wav"  # 22.05 kHz mono, 16-bit
    reference: str | None = None  # also write a reference picture (PNG) here, from run_dir's data
    run_dir: str = "outputs/read_a2v_tiny"  # a trained READ run: the reference is a held-out clip's first frame

    def __post_init__(self) -> None:
        require(bool(self.text.strip()), "text must not be empty")
