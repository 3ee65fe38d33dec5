"""Every config of the dual-stream recipe: the trainer's sections and their checks.

- :class:`DualStreamRecipe` (``avblocks run dual_stream.train --config tiny key=value ...``): the
  shared ``data`` section, the model (stream widths, depth, the coupling and where it goes),
  the per-stream flow objective, the sampling defaults the pipeline folder records, ``optim``
  and ``run``; :func:`validate` checks what spans several fields before anything is built.

The evaluation (``avblocks run dual_stream.evaluate_sync``) takes the shared
:class:`recipes.common.sync_eval.SyncEvalConfig`.

Nothing here imports a trainer.
"""

from dataclasses import dataclass, field
from typing import Annotated, Literal

from avblocks.config_rules import PROBABILITY, at_least, in_range
from avblocks.coupling.registry import CouplingConfig
from recipes.common import loop
from recipes.common.config import require
from recipes.common.data import DataConfig, check_batch, check_data
from recipes.common.loop import check_optim

__all__ = [
    "DiffusionConfig",
    "DualStreamRecipe",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SampleConfig",
    "validate",
]


@dataclass
class ModelConfig:
    video_patch: Annotated[int, at_least(1)] = 8  # square pixel patches: (size / patch)^2 tokens per frame
    video_width: Annotated[int, at_least(1)] = 96
    audio_patch: Annotated[int, at_least(1)] = 2  # spectrogram columns per audio token (every mel bin)
    audio_width: Annotated[int, at_least(1)] = 64
    depth: Annotated[int, at_least(1)] = 4
    num_heads: Annotated[int, at_least(1)] = 4
    mlp_ratio: Annotated[float, in_range(0, 64, lo_open=True)] = 4.0
    class_dropout: Annotated[float, in_range(0, 1, lo_open=True, hi_open=True)] = 0.1  # guidance needs the null class
    # rotary units per second (8: one unit per frame at 8 fps)
    time_scale: Annotated[float, in_range(0, 1e6, lo_open=True)] = 8.0
    coupling: CouplingConfig = field(default_factory=CouplingConfig)


@dataclass
class DiffusionConfig:
    time_distribution: Literal["uniform", "logit_normal"] = "logit_normal"
    shift: Annotated[float, in_range(0, 1000, lo_open=True)] = 1.0
    p_audio_to_video: Annotated[float, PROBABILITY] = 0.15  # the audio held clean (time 0, no loss)
    p_video_to_audio: Annotated[float, PROBABILITY] = 0.15  # the video held clean


@dataclass
class SampleConfig:
    """The sampling defaults the saved pipeline folder records."""

    steps: Annotated[int, at_least(1)] = 16
    sampler: Literal["heun", "euler"] = "heun"
    cfg_scale: Annotated[float, in_range(0, 100)] = 1.0


@dataclass
class OptimConfig(loop.OptimConfig):
    """:class:`recipes.common.loop.OptimConfig` with this recipe's defaults."""

    steps: int = 600
    batch_size: int = 16
    warmup: int = 50
    ema_decay: float = 0.99


@dataclass
class RunConfig(loop.RunConfig):
    """:class:`recipes.common.loop.RunConfig` with this recipe's defaults."""

    output_dir: str = "outputs/dual_stream"
    checkpoint_every: int = 200
    keep_checkpoints: int = 2


@dataclass
class DualStreamRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def validate(cfg: DualStreamRecipe, *, world_size: int = 1) -> None:
    """What spans several fields (each field's own bounds are declared on it), checked before
    anything is built; the error names the fields."""
    d, m, f, o = cfg.data, cfg.model, cfg.diffusion, cfg.optim
    check_optim(o, world_size=world_size)
    check_data(d)
    check_batch(o.batch_size, d)
    require(d.size % m.video_patch == 0, f"model.video_patch ({m.video_patch}) must divide data.size ({d.size})")
    columns = d.spec().frame_columns
    require(columns % m.audio_patch == 0, f"model.audio_patch ({m.audio_patch}) must divide the spectrogram "
            f"columns per frame ({columns} = data.sample_rate / data.fps / data.hop)")
    for name, width in (("model.video_width", m.video_width), ("model.audio_width", m.audio_width)):
        require(width % m.num_heads == 0 and (width // m.num_heads) % 2 == 0,
                f"{name} ({width}) must be a multiple of model.num_heads ({m.num_heads}) with an even head width")
    require(m.video_width % 4 == 0, f"model.video_width ({m.video_width}) must be divisible by 4")
    c = m.coupling
    require(c.kind != "gcm" or d.num_frames % c.groups == 0,
            f"model.coupling.groups ({c.groups}) must divide data.num_frames ({d.num_frames})")
    require(c.kind != "biblock" or d.num_frames % c.block_frames == 0,
            f"model.coupling.block_frames ({c.block_frames}) must divide data.num_frames ({d.num_frames})")
    require(c.kind != "random_shift" or c.shift_window >= columns // m.audio_patch,
            f"model.coupling.shift_window ({c.shift_window}) must be at least the audio tokens per frame "
            f"({columns // m.audio_patch}), so every audio token is seen")
    require(f.p_audio_to_video + f.p_video_to_audio <= 1.0,
            f"diffusion.p_audio_to_video + diffusion.p_video_to_audio ({f.p_audio_to_video} + "
            f"{f.p_video_to_audio}) must be <= 1")
