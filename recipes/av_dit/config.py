"""Every config section of the AV-DiT recipe, and the checks each one runs before anything
is built or written.

All of them live here, apart from the trainers, so that a trainer, the comparison and the
tests can name any stage's config without importing another stage's code. Each field
declares its own bounds next to it (:mod:`avblocks.config_rules`); each recipe config has a
``validate(world_size=...)`` for what spans several fields, which the trainer's ``validate``
(what :func:`recipes.common.loop.start_run` calls) extends with memory estimates. Errors name
the fields and their values.
"""

from dataclasses import dataclass, field
from typing import Annotated, Literal

from avblocks.config_rules import PROBABILITY, SEED, WEIGHT, at_least, in_range
from recipes.common import loop
from recipes.common.config import require
from recipes.common.data import DataConfig, check_batch, check_data
from recipes.common.loading import LoaderConfig
from recipes.common.loop import OptimConfig, check_optim
from recipes.common.speed import SpeedConfig


@dataclass
class RunConfig(loop.RunConfig):
    """:class:`recipes.common.loop.RunConfig` with AV-DiT's output folder, and DDP only."""

    output_dir: str = "outputs/av_dit"
    parallel: Literal["ddp"] = "ddp"  # FSDP is not wired for partly frozen models (trainer.py)


# ---- stage 1: the per-frame image autoencoder ------------------------------------------------


@dataclass
class ImageAutoencoderModelConfig(SpeedConfig):
    latent_channels: Annotated[int, at_least(1)] = 4
    hidden_channels: Annotated[int, at_least(1)] = 64
    downsample: Annotated[int, at_least(1)] = 4
    depth: Annotated[int, at_least(1)] = 2
    groups: Annotated[int, at_least(1)] = 8


@dataclass
class AutoencoderLossConfig:
    pixel_mse: Annotated[float, WEIGHT] = 4.0
    kl: Annotated[float, WEIGHT] = 1e-6
    audio: Annotated[float, WEIGHT] = 1.0


@dataclass
class AutoencoderRunConfig(RunConfig):
    output_dir: str = "outputs/av_dit_autoencoder"
    calibration_clips: Annotated[int, at_least(1)] = 32
    eval_clips: Annotated[int, at_least(1)] = 16


@dataclass
class AutoencoderRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    audio_images: Annotated[int, at_least(1)] = 4  # spectrogram images per clip (avblocks.codecs.ImageLatentCodec)
    model: ImageAutoencoderModelConfig = field(default_factory=ImageAutoencoderModelConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, batch_size=8))
    run: AutoencoderRunConfig = field(default_factory=AutoencoderRunConfig)

    def validate(self, *, world_size: int = 1) -> None:
        check_optim(self.optim, world_size=world_size)
        d, m = self.data, self.model
        check_data(d)
        check_batch(self.optim.batch_size, d)
        require(d.num_frames % self.audio_images == 0,
                f"audio_images ({self.audio_images}) must divide data.num_frames ({d.num_frames})")
        require(d.size % m.downsample == 0, f"model.downsample ({m.downsample}) must divide data.size ({d.size})")
        require(m.hidden_channels % m.groups == 0,
                f"model.groups ({m.groups}) must divide model.hidden_channels ({m.hidden_channels})")


# ---- stage 2: the image DiT (the stand-in for ImageNet pretraining) --------------------------


@dataclass
class ImageDiTConfig(SpeedConfig):
    patch_size: Annotated[int, at_least(1)] = 2
    hidden_size: Annotated[int, at_least(1)] = 128
    depth: Annotated[int, at_least(1)] = 4
    num_heads: Annotated[int, at_least(1)] = 4
    mlp_ratio: Annotated[float, in_range(0, 64, lo_open=True)] = 4.0
    # guidance needs the null class
    class_dropout_prob: Annotated[float, in_range(0, 1, lo_open=True, hi_open=True)] = 0.1
    learn_sigma: bool = False


@dataclass
class DDPMConfig:
    """The frozen DiT's objective; the adapters train with it and the pipeline samples with it."""

    schedule: Literal["linear", "cosine"] = "linear"
    num_timesteps: Annotated[int, in_range(1, 100_000)] = 1000  # its schedule tables hold one entry a step


@dataclass
class PretrainRecipe:
    autoencoder: str = "outputs/av_dit_autoencoder"
    data: LoaderConfig = field(default_factory=LoaderConfig)  # how the cached latents are read
    p_audio: Annotated[float, PROBABILITY] = 0.5
    model: ImageDiTConfig = field(default_factory=ImageDiTConfig)
    diffusion: DDPMConfig = field(default_factory=DDPMConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=64))
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/av_dit_pretrain"))

    def validate(self, *, world_size: int = 1) -> None:
        check_optim(self.optim, world_size=world_size)
        m = self.model
        require(m.hidden_size % m.num_heads == 0,
                f"model.num_heads ({m.num_heads}) must divide model.hidden_size ({m.hidden_size})")
        require(m.hidden_size % 4 == 0, f"model.hidden_size ({m.hidden_size}) must be divisible by 4")


# ---- stage 3: the adapters, and the pipeline they are saved in ------------------------------


@dataclass
class AdapterConfig(SpeedConfig):
    lora_targets: tuple[str, ...] = ("blocks.*.attn.qkv", "blocks.*.attn.proj")
    lora_rank: Annotated[int, at_least(1)] = 8
    lora_alpha: Annotated[float, in_range(0, 10_000, lo_open=True)] = 8.0  # the LoRA update is scaled by alpha / rank
    bottleneck: Annotated[int, at_least(0)] = 0
    fusion_every: Annotated[int, at_least(1)] = 2
    fusion_frame_local: bool = False  # each video frame fuses with its own audio tokens only
    # noise share common to a clip's video frames (mixed noise prior)
    frame_noise_share: Annotated[float, in_range(0, 1, hi_open=True)] = 0.0
    class_labels: Literal["pretrained", "adapter"] = "pretrained"
    class_dropout: Annotated[float, in_range(0, 1, hi_open=True)] = 0.1


@dataclass
class SampleConfig:
    """The sampling defaults the saved pipeline records: deterministic DDIM (trailing spacing)
    with 25 steps under guidance 2, what this recipe's samples have used."""

    steps: Annotated[int, at_least(1)] = 25
    sampler: Literal["ddim", "dpm"] = "ddim"
    cfg_scale: Annotated[float, at_least(0)] = 2.0


@dataclass
class AVDiTRecipe:
    autoencoder: str = "outputs/av_dit_autoencoder"
    pretrained: str = "outputs/av_dit_pretrain"
    dit_checkpoint: str | None = None  # an original DiT file; overrides `pretrained`
    dit_preset: str = "DiT-XL/2"  # the architecture of `dit_checkpoint`
    data: LoaderConfig = field(default_factory=LoaderConfig)  # how the cached latents are read
    audio_weight: Annotated[float, WEIGHT] = 1.0
    model: AdapterConfig = field(default_factory=AdapterConfig)
    diffusion: DDPMConfig = field(default_factory=DDPMConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=16, lr=1e-3))
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/av_dit"))

    def validate(self, *, world_size: int = 1) -> None:
        check_optim(self.optim, world_size=world_size)
        m = self.model
        require(self.dit_checkpoint is None or m.class_labels == "adapter",
                "an original DiT checkpoint has ImageNet classes: set model.class_labels=adapter")
        require(self.sample.steps <= self.diffusion.num_timesteps,
                f"sample.steps ({self.sample.steps}) must lie in [1, diffusion.num_timesteps "
                f"({self.diffusion.num_timesteps})]")


# ---- the comparison with a ProAV-DiT run ------------------------------------------------------


@dataclass
class CompareConfig:
    output_dir: str = "outputs/av_dit/compare"
    proav_run: str = "outputs/demo"
    proav_autoencoder_minutes: Annotated[float, at_least(0)] = 0.0  # 0: read from proav_run/metrics.json
    proav_dit_minutes: Annotated[float, at_least(0)] = 0.0  # 0: read from proav_run/metrics.json
    # share of the denoiser minutes spent pretraining the image DiT (the adapters need minutes too)
    pretrain_fraction: Annotated[float, in_range(0, 1, hi_open=True)] = 0.5
    # > 0: this budget instead (not charged to AV-DiT's share)
    pretrain_minutes: Annotated[float, at_least(0)] = 0.0
    autoencoder_overrides: list[str] = field(default_factory=list)
    pretrain_overrides: list[str] = field(default_factory=list)
    adapter_overrides: list[str] = field(default_factory=list)
    feature_overrides: list[str] = field(default_factory=list)
    feature_steps: Annotated[int, at_least(1)] = 200
    per_class: Annotated[int, at_least(1)] = 4
    sample_steps: Annotated[int, at_least(1)] = 16
    cfg_scale: Annotated[float, at_least(0)] = 1.0  # the ProAV-DiT demo's scale
    seed: Annotated[int, SEED] = 0
    progress: bool = True

    def validate(self) -> None:
        require(self.pretrain_fraction > 0 or self.pretrain_minutes > 0,
                f"AV-DiT needs a pretrained image DiT: pretrain_fraction ({self.pretrain_fraction}) or "
                f"pretrain_minutes ({self.pretrain_minutes}) must be > 0")

