"""Every config section of the AV-DiT recipe, and the checks each one runs before anything
is built or written.

All of them live here, apart from the trainers, so that a trainer, the comparison and the
tests can name any stage's config without importing another stage's code. Each recipe
config has a ``validate(world_size=...)`` that :func:`recipes.common.loop.start_run` calls;
its errors name the fields and their values.
"""

from dataclasses import dataclass, field
from typing import Literal

from recipes.common import loop
from recipes.common.config import require
from recipes.common.data import DataConfig
from recipes.common.loading import LoaderConfig
from recipes.common.loop import OptimConfig
from recipes.common.speed import SpeedConfig


@dataclass
class RunConfig(loop.RunConfig):
    """:class:`recipes.common.loop.RunConfig` with AV-DiT's output folder, and DDP only."""

    output_dir: str = "outputs/av_dit"
    parallel: Literal["ddp"] = "ddp"  # FSDP is not wired for partly frozen models (trainer.py)


def check_optim_and_run(optim: OptimConfig, run: RunConfig, *, world_size: int) -> None:
    """The constraints every trainer shares."""
    for name, value in (("optim.steps", optim.steps), ("optim.batch_size", optim.batch_size),
                        ("optim.grad_accum", optim.grad_accum), ("run.log_every", run.log_every),
                        ("run.checkpoint_every", run.checkpoint_every),
                        ("run.keep_checkpoints", run.keep_checkpoints)):
        require(value >= 1, f"{name} ({value}) must be >= 1")
    require(optim.lr > 0, f"optim.lr ({optim.lr}) must be > 0")
    require(0.0 <= optim.ema_decay <= 1.0, f"optim.ema_decay ({optim.ema_decay}) must lie in [0, 1]")
    require(optim.batch_size % (world_size * optim.grad_accum) == 0,
            f"optim.batch_size ({optim.batch_size}) must be divisible by the number of ranks ({world_size}) "
            f"x optim.grad_accum ({optim.grad_accum})")


# ---- stage 1: the per-frame image autoencoder ------------------------------------------------


@dataclass
class ImageAutoencoderModelConfig(SpeedConfig):
    latent_channels: int = 4
    hidden_channels: int = 64
    downsample: int = 4
    depth: int = 2
    groups: int = 8


@dataclass
class AutoencoderLossConfig:
    pixel_mse: float = 4.0
    kl: float = 1e-6
    audio: float = 1.0


@dataclass
class AutoencoderRunConfig(RunConfig):
    output_dir: str = "outputs/av_dit_autoencoder"
    calibration_clips: int = 32
    eval_clips: int = 16


@dataclass
class AutoencoderRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    audio_images: int = 4  # spectrogram images per clip (avblocks.codecs.ImageLatentCodec)
    model: ImageAutoencoderModelConfig = field(default_factory=ImageAutoencoderModelConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, batch_size=8))
    run: AutoencoderRunConfig = field(default_factory=AutoencoderRunConfig)

    def validate(self, *, world_size: int = 1) -> None:
        check_optim_and_run(self.optim, self.run, world_size=world_size)
        d, m = self.data, self.model
        require(self.audio_images >= 1 and d.num_frames % self.audio_images == 0,
                f"audio_images ({self.audio_images}) must divide data.num_frames ({d.num_frames})")
        require(m.downsample >= 1 and d.size % m.downsample == 0,
                f"model.downsample ({m.downsample}) must divide data.size ({d.size})")
        require(m.groups >= 1 and m.hidden_channels % m.groups == 0,
                f"model.groups ({m.groups}) must divide model.hidden_channels ({m.hidden_channels})")
        require(self.run.calibration_clips >= 1,
                f"run.calibration_clips ({self.run.calibration_clips}) must be >= 1")


# ---- stage 2: the image DiT (the stand-in for ImageNet pretraining) --------------------------


@dataclass
class ImageDiTConfig(SpeedConfig):
    patch_size: int = 2
    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    learn_sigma: bool = False


@dataclass
class DDPMConfig:
    """The frozen DiT's objective; the adapters train with it and the pipeline samples with it."""

    schedule: Literal["linear", "cosine"] = "linear"
    num_timesteps: int = 1000


@dataclass
class PretrainRecipe:
    autoencoder: str = "outputs/av_dit_autoencoder"
    data: LoaderConfig = field(default_factory=LoaderConfig)  # how the cached latents are read
    p_audio: float = 0.5
    model: ImageDiTConfig = field(default_factory=ImageDiTConfig)
    diffusion: DDPMConfig = field(default_factory=DDPMConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=64))
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/av_dit_pretrain"))

    def validate(self, *, world_size: int = 1) -> None:
        check_optim_and_run(self.optim, self.run, world_size=world_size)
        m = self.model
        require(m.hidden_size % m.num_heads == 0,
                f"model.num_heads ({m.num_heads}) must divide model.hidden_size ({m.hidden_size})")
        require(m.hidden_size % 4 == 0, f"model.hidden_size ({m.hidden_size}) must be divisible by 4")
        require(0.0 <= self.p_audio <= 1.0, f"p_audio ({self.p_audio}) must lie in [0, 1]")
        require(0.0 < m.class_dropout_prob < 1.0, f"model.class_dropout_prob ({m.class_dropout_prob}) must "
                "lie in (0, 1): guidance needs the null class")


# ---- stage 3: the adapters, and the pipeline they are saved in ------------------------------


@dataclass
class AdapterConfig(SpeedConfig):
    lora_targets: tuple[str, ...] = ("blocks.*.attn.qkv", "blocks.*.attn.proj")
    lora_rank: int = 8
    lora_alpha: float = 8.0
    bottleneck: int = 0
    fusion_every: int = 2
    fusion_frame_local: bool = False  # each video frame fuses with its own audio tokens only
    frame_noise_share: float = 0.0  # noise share common to a clip's video frames (mixed noise prior)
    class_labels: str = "pretrained"
    class_dropout: float = 0.1


@dataclass
class SampleConfig:
    """The sampling defaults the saved pipeline records: deterministic DDIM (trailing spacing)
    with 25 steps under guidance 2, what this recipe's samples have used."""

    steps: int = 25
    sampler: Literal["ddim", "dpm"] = "ddim"
    cfg_scale: float = 2.0


@dataclass
class AVDiTRecipe:
    autoencoder: str = "outputs/av_dit_autoencoder"
    pretrained: str = "outputs/av_dit_pretrain"
    dit_checkpoint: str | None = None  # an original DiT file; overrides `pretrained`
    dit_preset: str = "DiT-XL/2"  # the architecture of `dit_checkpoint`
    data: LoaderConfig = field(default_factory=LoaderConfig)  # how the cached latents are read
    audio_weight: float = 1.0
    model: AdapterConfig = field(default_factory=AdapterConfig)
    diffusion: DDPMConfig = field(default_factory=DDPMConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=16, lr=1e-3))
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/av_dit"))

    def validate(self, *, world_size: int = 1) -> None:
        check_optim_and_run(self.optim, self.run, world_size=world_size)
        m = self.model
        require(m.class_labels in ("pretrained", "adapter"),
                f"model.class_labels ({m.class_labels!r}) must be 'pretrained' or 'adapter'")
        require(self.dit_checkpoint is None or m.class_labels == "adapter",
                "an original DiT checkpoint has ImageNet classes: set model.class_labels=adapter")
        require(0.0 <= m.class_dropout < 1.0, f"model.class_dropout ({m.class_dropout}) must lie in [0, 1)")
        require(m.lora_rank >= 1, f"model.lora_rank ({m.lora_rank}) must be >= 1")
        require(self.audio_weight >= 0, f"audio_weight ({self.audio_weight}) must be >= 0")
        require(1 <= self.sample.steps <= self.diffusion.num_timesteps,
                f"sample.steps ({self.sample.steps}) must lie in [1, diffusion.num_timesteps "
                f"({self.diffusion.num_timesteps})]")


# ---- the comparison with a ProAV-DiT run ------------------------------------------------------


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

    def validate(self) -> None:
        require(self.pretrain_fraction > 0 or self.pretrain_minutes > 0,
                f"AV-DiT needs a pretrained image DiT: pretrain_fraction ({self.pretrain_fraction}) or "
                f"pretrain_minutes ({self.pretrain_minutes}) must be > 0")
        require(0.0 <= self.pretrain_fraction < 1.0,
                f"pretrain_fraction ({self.pretrain_fraction}) must lie in [0, 1): the adapters need minutes too")
        for name, value in (("per_class", self.per_class), ("sample_steps", self.sample_steps),
                            ("feature_steps", self.feature_steps)):
            require(value >= 1, f"{name} ({value}) must be >= 1")
