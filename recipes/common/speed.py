"""The speed tools a recipe's ``model`` section switches on, and the checks that refuse what
cannot work, before anything is built.

A recipe's model section subclasses :class:`SpeedConfig`, which adds three fields:

- ``model.compile``: regional compilation (:func:`avblocks.dit.compile.compile_blocks`):
  each repeated block is compiled in place (one graph, reused by every block of the stack);
  the state-dict keys, the EMA and the saved model are unchanged. ``fullgraph`` except
  under FSDP2, whose hooks run inside the compiled blocks.
- ``model.gradient_checkpointing``: every block (AV-DiT: every layer) recomputed in the
  backward (the model's own ``gradient_checkpointing`` switch, else
  :func:`avblocks.dit.compile.checkpoint_blocks`): activation memory of the blocks' inputs
  plus one block instead of all (``benchmarks/README.md``, "Paper-size configs"); the same
  outputs and gradients.
- ``model.attention_backend``: ``sdpa`` (PyTorch's fused attention: FlashAttention or cuDNN
  on CUDA), ``flex`` (FlexAttention, compiled; for block-sparse masks) or ``math`` (the
  plain reference) for every :func:`avblocks.attention.attend` of the training step
  (:func:`attention`). ``flex`` has no backward on the CPU, so training with it there is
  refused here, naming the device; the backend itself refuses any mask or dtype it cannot
  honour at the first call (:mod:`avblocks.attention.dispatch`).

:func:`check_sections` runs in :func:`recipes.common.loop.start_run` on every such section
and every ``optim`` section of a recipe config (precision against the parallel strategy),
before the output folder exists.
"""

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import torch
from torch import nn

from avblocks.attention import attention_backend
from avblocks.config import ConfigError
from avblocks.config_rules import CHANGEABLE
from avblocks.device import PRECISIONS, is_cuda
from avblocks.dit.compile import checkpoint_blocks, compile_blocks

__all__ = ["ATTENTION_BACKENDS", "SpeedConfig", "apply_speed", "attention", "check_sections", "library_config"]

ATTENTION_BACKENDS = ("sdpa", "flex", "math")


@dataclasses.dataclass
class SpeedConfig:
    """The speed fields of a recipe's ``model`` section (see the module docstring)."""

    # how the same model runs, not what it is: a rerun may change them
    compile: Annotated[bool, CHANGEABLE] = False  # regional torch.compile of the repeated blocks
    gradient_checkpointing: Annotated[bool, CHANGEABLE] = False  # recompute each repeated block in the backward
    attention_backend: Annotated[str, CHANGEABLE] = "sdpa"  # sdpa | flex | math


def check_speed(section: str, speed: SpeedConfig, device: torch.device) -> None:
    """Refuse a backend that does not exist or cannot train on ``device``."""
    if speed.attention_backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"{section}.attention_backend ({speed.attention_backend!r}) must be one of "
                          f"{list(ATTENTION_BACKENDS)}")
    if speed.attention_backend == "flex" and not is_cuda(device):
        raise ConfigError(f"{section}.attention_backend (flex) cannot train on {device}: PyTorch's "
                          "FlexAttention has no CPU backward; use sdpa or math there")


def check_sections(cfg: Any, device: torch.device, *, sharded: bool) -> None:
    """:func:`check_speed` on every :class:`SpeedConfig` section of ``cfg``, and every
    section with a ``precision`` checked against the strategy (``sharded``: FSDP2 under
    torchrun, which has no fp16 loss scaling here: use bf16)."""
    for field in dataclasses.fields(cfg):
        section = getattr(cfg, field.name)
        if isinstance(section, SpeedConfig):
            check_speed(field.name, section, device)
        precision = getattr(section, "precision", None)
        if precision is not None:
            if precision not in PRECISIONS:
                raise ConfigError(f"{field.name}.precision ({precision!r}) must be one of {list(PRECISIONS)}")
            if precision == "fp16" and sharded:
                raise ConfigError(f"{field.name}.precision (fp16) with run.parallel=fsdp: FSDP2 shards have no "
                                  "fp16 loss scaler here; use bf16 (FSDP2 then computes in bf16 and reduces "
                                  "in float32)")


def library_config(section: SpeedConfig, config_class: type) -> Any:
    """The library's own config (e.g. ``MDSAConfig``) inside a model section that extends it
    with the speed fields: those fields dropped, the rest copied."""
    return config_class(**{f.name: getattr(section, f.name) for f in dataclasses.fields(config_class)})


def apply_speed(model: nn.Module, speed: SpeedConfig, *, sharded: bool = False) -> nn.Module:
    """Checkpointing (the model's own switch where it has one: ST-DiT's blocks, AV-DiT's
    layers; else every repeated block), then regional compile (in place)."""
    if speed.gradient_checkpointing:
        if hasattr(model, "gradient_checkpointing"):
            model.gradient_checkpointing = True
        else:
            checkpoint_blocks(model)
    if speed.compile:
        compile_blocks(model, fullgraph=not sharded)
    return model


@contextmanager
def attention(speed: SpeedConfig) -> Iterator[None]:
    """Every :func:`avblocks.attention.attend` inside uses ``speed.attention_backend``."""
    with attention_backend(speed.attention_backend):
        yield
