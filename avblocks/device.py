"""Where tensors live and in what precision: the one module that names a device.

Every trainer, sampler, evaluator and pipeline asks this module, and nothing else in
``recipes/`` or ``avblocks/pipelines/`` spells a device type (a test reads the sources).

- :func:`resolve_device`: what ``run.device`` (and a pipeline's ``device=``) means.
  ``"auto"`` is ``cuda:LOCAL_RANK`` when CUDA is there, else the CPU; ``"cpu"``, ``"cuda"``
  (this process's GPU: ``cuda:LOCAL_RANK``) and ``"cuda:N"`` are accepted; anything else, or
  CUDA asked for where there is none, is a ``ValueError`` naming the value.
- :data:`HOST`: the CPU, where files are read and written (``map_location``, decoding).
- Precision (``optim.precision``): ``fp32`` | ``bf16`` | ``fp16``. :func:`autocast` runs the
  forward under ``torch.autocast`` on the device's own type (so bf16 reaches the CUDA
  kernels; on the CPU the CPU's); :func:`grad_scaler` is enabled for ``fp16`` only (its small
  range needs loss scaling; bf16 has float32's range).
- :func:`configure_matmul`: TF32 for float32 matmuls and convolutions on CUDA, the default
  here (about 8x the float32 rate of an H100/H200 tensor core, ~1e-3 relative error, the
  setting most PyTorch training uses); nothing changes on the CPU, so the CPU path stays
  bit-exact.
- :func:`seeded_generator`: a ``torch.Generator`` on the device the noise is drawn on.
- :func:`to_device`: a batch (tensors inside dicts / lists / tuples) moved with
  ``non_blocking`` (overlaps the copy with compute when the batch is in pinned memory; the
  identity on the CPU).
- :func:`process_group_backend`: NCCL for CUDA devices, gloo for the CPU.
"""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, get_args

import torch

__all__ = [
    "HOST",
    "META",
    "Precision",
    "PRECISIONS",
    "autocast",
    "autocast_settings",
    "check_precision",
    "collective_device",
    "configure_matmul",
    "grad_scaler",
    "is_cuda",
    "env_local_rank",
    "pin_memory",
    "process_group_backend",
    "resolve_device",
    "seeded_generator",
    "to_device",
]

HOST = torch.device("cpu")
"""The CPU: where files are read and written and media is decoded."""

META = torch.device("meta")
"""Shapes without storage: models built here cost no memory (memory estimates, configs)."""

_CUDA = "cuda"
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""The names ``optim.precision`` accepts: ``fp32``, ``bf16``, ``fp16``."""
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def env_local_rank() -> int:
    """This process's ``LOCAL_RANK`` (``torchrun`` sets it; 0 without it)."""
    value = os.environ.get("LOCAL_RANK", "")
    if value == "":
        return 0
    try:
        rank = int(value)
    except ValueError:
        raise ValueError(f"environment variable LOCAL_RANK ({value!r}) must be an integer") from None
    if rank < 0:
        raise ValueError(f"environment variable LOCAL_RANK ({rank}) must be >= 0")
    return rank


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: "str | torch.device" = "auto", *, local_rank: int | None = None,
                   cuda_count: int | None = None) -> torch.device:
    """The device ``name`` means for this process (see the module docstring).

    ``local_rank`` defaults to ``LOCAL_RANK``; ``cuda_count`` (the GPUs this process sees)
    to PyTorch's count, 0 without CUDA: both are parameters so the decision can be tested on
    any machine.
    """
    count = _cuda_count() if cuda_count is None else cuda_count
    rank = env_local_rank() if local_rank is None else local_rank
    text = str(name).strip().lower() if isinstance(name, (str, torch.device)) else None
    expected = "expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
    if text is None:
        raise ValueError(f"device {name!r} is not a device name: {expected}")
    if text == "auto":
        if count == 0:
            return HOST
        text = _CUDA
    if text == HOST.type:
        return HOST
    if text == _CUDA:
        index = rank
    elif text.startswith(_CUDA + ":") and text[len(_CUDA) + 1:].isdigit():
        index = int(text[len(_CUDA) + 1:])
    else:
        raise ValueError(f"device {name!r} is not known: {expected}")
    if count == 0:
        raise ValueError(f"device {name!r} asks for CUDA, but PyTorch sees no CUDA device here "
                         f"(torch {torch.__version__}); use 'cpu' or 'auto'")
    if index >= count:
        which = f"LOCAL_RANK {rank}" if text == _CUDA else f"index {index}"
        raise ValueError(f"device {name!r} ({which}) names a GPU this process cannot see: "
                         f"{count} visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    return torch.device(_CUDA, index)


def is_cuda(device: "torch.device | str") -> bool:
    """Whether ``device`` is a CUDA device (``"cuda"``, ``"cuda:N"`` or such a ``torch.device``)."""
    return torch.device(device).type == _CUDA


def process_group_backend(device: torch.device) -> str:
    """The collective backend for ranks on ``device``: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if is_cuda(device) else "gloo"


def collective_device(backend: str) -> torch.device:
    """Where small tensors for a collective of ``backend`` must live: this process's current
    GPU for NCCL (it reduces only CUDA tensors), the CPU for gloo."""
    return torch.device(_CUDA, torch.cuda.current_device()) if backend == "nccl" else HOST


def pin_memory(device: torch.device) -> bool:
    """Whether a data loader feeding ``device`` should pin its batches (CUDA only)."""
    return is_cuda(device)


def check_precision(precision: str) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`; else a ``ValueError`` naming it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not known: expected one of {list(PRECISIONS)}")
    return precision


def autocast_settings(device: "torch.device | str", precision: str) -> dict[str, Any]:
    """``torch.autocast``'s arguments for ``precision`` on ``device``: the device's own type,
    the low-precision dtype, and ``enabled=False`` for ``fp32`` (the forward is untouched)."""
    check_precision(precision)
    device_type = torch.device(device).type
    return {"device_type": device_type, "dtype": _DTYPES[precision] if precision != "fp32" else torch.bfloat16,
            "enabled": precision != "fp32"}


@contextmanager
def autocast(device: "torch.device | str", precision: str) -> Iterator[None]:
    """The forward and loss under autocast as :func:`autocast_settings` says."""
    with torch.autocast(**autocast_settings(device, precision)):
        yield


def grad_scaler(device: "torch.device | str", precision: str) -> torch.amp.GradScaler:
    """A gradient scaler on the device's type, enabled only for ``fp16`` (a disabled scaler
    passes every call through, so the fp32 / bf16 step is the plain one)."""
    check_precision(precision)
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def configure_matmul(device: "torch.device | str", *, tf32: bool = True) -> bool:
    """On CUDA, let float32 matmuls and convolutions use TF32 (``tf32``); returns whether it
    did. The CPU is left alone (its float32 arithmetic stays exact)."""
    if not is_cuda(device):
        return False
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return tf32


def seeded_generator(device: "torch.device | str", seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (noise drawn where it is used)."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def to_device(batch: Any, device: torch.device, *, non_blocking: bool = True) -> Any:
    """``batch`` with every tensor (inside dicts, lists and tuples) on ``device``; other
    values (labels as ints, paths) unchanged. Tensors already there are returned as they are."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device, non_blocking=non_blocking) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device, non_blocking=non_blocking) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    return batch
