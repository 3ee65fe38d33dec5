"""What every recipe's entry points share: configs, data, the training loop, checkpoints,
distribution, faults, evaluation. A recipe imports the library and this package, never
another recipe."""

from recipes.common.checkpoint import CheckpointManager, capture_rng, restore_rng
from recipes.common.config import load_config, parse_cli, require
from recipes.common.schedule import StepBatchSampler, warmup_cosine

__all__ = [
    "CheckpointManager",
    "StepBatchSampler",
    "capture_rng",
    "load_config",
    "parse_cli",
    "require",
    "restore_rng",
    "warmup_cosine",
]
