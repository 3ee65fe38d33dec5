"""What every recipe's entry points share: configs, checkpoints, batch order, schedules."""

from recipes.common.checkpoint import CheckpointManager, capture_rng, restore_rng
from recipes.common.config import load_config, parse_cli
from recipes.common.schedule import StepBatchSampler, warmup_cosine

__all__ = [
    "CheckpointManager",
    "StepBatchSampler",
    "capture_rng",
    "load_config",
    "parse_cli",
    "restore_rng",
    "warmup_cosine",
]
