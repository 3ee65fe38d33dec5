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

from recipes.common import loop
from recipes.common.config import require
from recipes.common.data import DataConfig
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
    strides: tuple[int, ...] = (2, 5)  # product = spectrogram columns per video frame
    hidden_channels: int = 64
    code_dim: int = 32
    video_hidden: int = 32
    temperature: float = 0.1
    contrastive_weight: float = 1.0


@dataclass
class DenoiserConfig(SpeedConfig):
    patch: int = 4
    hidden_size: int = 64
    depth: int = 3
    num_heads: int = 4
    mlp_ratio: float = 2.0
    window: int = 1
    audio_modulation: bool = False  # each frame's code also enters that frame's adaLN conditioning
    object_weight: float = 0.0  # loss weight + 1 of the pixels where a frame differs from its reference
    clean_loss: bool = False  # weight each frame's velocity error by t^2: the error of the clean frame
    audio_dropout: float = 0.1  # probability a training example hears no audio (for guidance)


@dataclass
class ScheduleConfig:
    motion_frames: int = 8  # frames generated per clip (the reference comes on top)
    lag: int = 1  # levels the first motion frame is ahead of the rest
    sample_steps: int = 10  # sampling steps; one level = 1 / sample_steps in training too
    guidance: float = 1.0  # audio classifier-free guidance scale at sampling (1: none)
    time_distribution: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0


@dataclass
class OptimConfig(loop.OptimConfig):
    """:class:`recipes.common.loop.OptimConfig` with READ's defaults (each stage has its own)."""

    steps: int = 600
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
    require(1 <= s.motion_frames <= d.num_frames,
            f"schedule.motion_frames ({s.motion_frames}) must lie in [1, data.num_frames={d.num_frames}]")
    require(s.motion_frames >= 2, f"schedule.motion_frames ({s.motion_frames}) must be >= 2 "
            "(one frame overlaps the previous clip in long generation)")
    require(1 <= s.lag <= s.sample_steps,
            f"schedule.lag ({s.lag}) must lie in [1, schedule.sample_steps={s.sample_steps}]")
    require(m.object_weight >= 0.0, f"model.object_weight ({m.object_weight}) must be >= 0")
    require(0.0 <= m.audio_dropout < 1.0, f"model.audio_dropout ({m.audio_dropout}) must lie in [0, 1)")
    require(s.guidance > 0, f"schedule.guidance ({s.guidance}) must be > 0")
    require(d.size % m.patch == 0, f"model.patch ({m.patch}) must divide data.size ({d.size})")
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
        require(o.steps >= 0, f"{name}.steps ({o.steps}) must be >= 0")
        require(o.batch_size <= d.num_clips,
                f"{name}.batch_size ({o.batch_size}) must be <= data.num_clips ({d.num_clips})")


@dataclass
class GenerateConfig:
    """``recipes.read_a2v.generate``: a trained run's pipeline driven by a held-out clip."""

    run_dir: str  # a finished training run (its config.yaml and pipeline/)
    frames: int = 64  # video frames to generate (the held-out clip is made this long)
    clip: int = 0  # which held-out clip drives it (its soundtrack and first frame)
    seed: int = 0
    steps: int | None = None  # sampling steps per clip; None: the pipeline's
    guidance: float | None = None  # audio guidance scale; None: the pipeline's
    out: str = "read_long.mp4"

    def __post_init__(self) -> None:
        require(self.frames >= 1, f"frames ({self.frames}) must be >= 1")
        require(self.clip >= 0, f"clip ({self.clip}) must be >= 0")


@dataclass
class EvaluateConfig:
    """``recipes.read_a2v.evaluate``: AV-sync, clip-boundary discontinuity and speed of a run."""

    run_dir: str  # a finished training run (its config.yaml and pipeline/)
    clips: int = 4  # held-out clips to generate
    frames: int | None = None  # frames per generated video; None: 4x the training clips'
    seed: int = 0  # clip i is sampled with seed + i
    steps: int | None = None  # sampling steps per clip; None: the pipeline's
    guidance: float | None = None  # audio guidance scale; None: the pipeline's
    carry: bool = True  # False: the ablation with no frame carried between clips
    threads: int = 1  # torch threads (1: steadier on a shared machine)
    out: str | None = None  # also write the report here (JSON)

    def __post_init__(self) -> None:
        require(self.clips >= 2, f"clips ({self.clips}) must be >= 2 (the shuffled-audio baseline pairs "
                "clip i's video with clip i+1's sound)")
        require(self.frames is None or self.frames >= 1, f"frames ({self.frames}) must be >= 1")
        require(self.threads >= 1, f"threads ({self.threads}) must be >= 1")


@dataclass
class SpeakConfig:
    """``recipes.read_a2v.speak``: real speech (Piper, offline) to drive a READ pipeline."""

    text: str = "Hello! This voice was made by Piper, offline, and it drives the video frame by frame."
    out: str = "speech.wav"  # 22.05 kHz mono, 16-bit
    reference: str | None = None  # also write a reference picture (PNG) here, from run_dir's data
    run_dir: str = "outputs/read_a2v_tiny"  # a trained READ run: the reference is a held-out clip's first frame

    def __post_init__(self) -> None:
        require(bool(self.text.strip()), "text must not be empty")

