"""What a run will hold in memory, estimated from its config before anything is built.

Each trainer's ``validate`` refuses a config whose estimate is over the memory limit
(:func:`recipes.common.config.require_fits`, :mod:`avblocks.memory`), so ``data.size=10000``
or ``run.eval_clips=100000`` is a one-line error naming the fields before the run folder
exists, not a ``MemoryError`` after ``config.yaml`` was written.

The estimates count what is certain and large, and nothing else (they are lower bounds):

- :meth:`~recipes.common.data.DataConfig.clip_bytes`: one clip as float32 tensors (video,
  waveform, video-like audio and the complex STFT it is made from);
- :func:`training_state_bytes`: the model built on PyTorch's ``meta`` device (no memory, no
  compute) times 20 bytes a trainable parameter (weights, gradients, AdamW's two moments, the
  EMA copy) plus 4 bytes a frozen one; a constructor that refuses the config there is a
  :class:`~avblocks.config.ConfigError` too, and a tensor too large to be described at all
  counts as infinitely large. Estimate the data first: a constructor may build small buffers
  (a mel filterbank) on the CPU, sized by the data fields;
- activations are not estimated (they depend on the architecture's every layer).
"""

import math
import warnings
from collections.abc import Callable

from torch import nn

from avblocks.config import ConfigError
from avblocks.device import META
from recipes.common.config import require_fits
from recipes.common.data import DataConfig

__all__ = ["require_clips_fit", "require_model_fits", "training_state_bytes"]


def require_clips_fit(what: str, count: int, data: DataConfig) -> None:
    """Refuse when ``count`` clips of ``data`` would not fit; ``what`` names the fields that
    set ``count`` (``"optim.batch_size"``)."""
    require_fits(f"{what}: {count} clip(s) of data.num_frames ({data.num_frames}) frames of "
                 f"data.size ({data.size}) squared", count * data.clip_bytes())


def training_state_bytes(build: Callable[[], nn.Module]) -> float:
    """What training keeps per parameter of ``build()`` (see the module docstring)."""
    try:
        with META:
            model = build()
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"the model cannot be built from this config: {e}") from None
    except RuntimeError as e:
        if "overflow" in str(e):  # a tensor whose size does not even fit in 64 bits
            return math.inf
        # a constructor that reads a value back cannot run on meta
        warnings.warn(f"the model's memory cannot be estimated before it is built ({e})", stacklevel=2)
        return 0
    return sum(p.numel() * (20 if p.requires_grad else 4) for p in model.parameters())


def require_model_fits(section: str, build: Callable[[], nn.Module]) -> None:
    """Refuse when training the model the ``section`` fields describe would not fit."""
    require_fits(f"training the model of {section} (its weights, gradients, optimizer state and EMA)",
                 training_state_bytes(build))
