"""Data-parallel training with PyTorch's own engine: ``torchrun``, DDP, FSDP2 and DCP.

A recipe trainer runs unchanged in one process or under ``torchrun``::

    torchrun --nproc_per_node 2 -m recipes.proav_dit.train_autoencoder --config ... run.parallel=ddp

One module per concern; each module's docstring holds the choices (the contract the trainers
and tests rely on) that govern its code:

- :mod:`~recipes.common.distributed.process_group`: the process group from ``torchrun``'s
  environment, per-rank seeding, rank 0 writes.
- :mod:`~recipes.common.distributed.batches`: the batch is global; rank slices and
  micro-batches.
- :mod:`~recipes.common.distributed.wrapping`: DDP / FSDP2 wrapping, which modules can be
  FSDP2 units, every rank on its own device, gradient sync only on the last micro-batch.
- :mod:`~recipes.common.distributed.collectives`: collectives that are no-ops in one process.
- :mod:`~recipes.common.distributed.dcp_checkpoints`: FSDP2 checkpoints are sharded folders.
- :mod:`~recipes.common.distributed.safe_dcp_reader`: their metadata is read without running
  code.
- :mod:`~recipes.common.distributed.train_checkpoints`: what the trainers save and resume
  through.

Every public name is importable from here (``dist_utils.wrap_model(...)``).
"""

from recipes.common.distributed.batches import (
    ShardedBatchSampler,
    shard_indices,
    split_batch,
    split_micro_batches,
)
from recipes.common.distributed.collectives import (
    all_reduce_mean,
    any_rank,
    average_gradients,
    barrier,
    full,
    gather_objects,
)
from recipes.common.distributed.dcp_checkpoints import (
    latest_sharded,
    load_sharded,
    save_sharded,
    sharded_checkpoints,
    verify_sharded,
)
from recipes.common.distributed.process_group import (
    DistContext,
    destroy_distributed,
    init_distributed,
    rank_seed,
)
from recipes.common.distributed.safe_dcp_reader import (
    SafeFileSystemReader,
    UnsafeCheckpointError,
)
from recipes.common.distributed.train_checkpoints import TrainCheckpoints
from recipes.common.distributed.wrapping import (
    FSDPPlan,
    Strategy,
    ddp_arguments,
    fsdp_plan,
    full_model_state,
    gradient_sync,
    is_fsdp,
    unwrap,
    wrap_model,
)

__all__ = [
    "DistContext",
    "FSDPPlan",
    "SafeFileSystemReader",
    "ShardedBatchSampler",
    "Strategy",
    "TrainCheckpoints",
    "UnsafeCheckpointError",
    "all_reduce_mean",
    "any_rank",
    "average_gradients",
    "barrier",
    "ddp_arguments",
    "destroy_distributed",
    "fsdp_plan",
    "full",
    "full_model_state",
    "gather_objects",
    "gradient_sync",
    "verify_sharded",
    "init_distributed",
    "is_fsdp",
    "latest_sharded",
    "load_sharded",
    "rank_seed",
    "save_sharded",
    "shard_indices",
    "sharded_checkpoints",
    "split_batch",
    "split_micro_batches",
    "unwrap",
    "wrap_model",
]
