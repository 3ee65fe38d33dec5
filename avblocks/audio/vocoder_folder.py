"""Which vocoder a local folder holds, and loading it: :func:`load_vocoder`.

- a vocos folder: ``config.yaml`` (+ ``model.safetensors`` or ``pytorch_model.bin``) ->
  :class:`~avblocks.audio.Vocoder`;
- a HiFi-GAN folder (``config.json`` with HiFi-GAN's generator keys + ``model.safetensors`` or
  one original checkpoint), or a checkpoint file next to such a ``config.json`` ->
  :class:`~avblocks.audio.HiFiGAN`.

Anything else is a ``FileNotFoundError`` naming the path and both layouts. Local files only.
"""

import os
from pathlib import Path

import torch
from torch import nn

from avblocks.audio.hifigan import HiFiGAN, is_hifigan_folder
from avblocks.audio.vocoder import CONFIG_FILE, Vocoder

__all__ = ["VOCODER_CLASSES", "load_vocoder"]

VOCODER_CLASSES: dict[str, type[nn.Module]] = {"vocoder": Vocoder, "hifigan": HiFiGAN}
"""The neural vocoders by the component name a pipeline folder saves them under."""


def load_vocoder(path: "str | os.PathLike[str]", *, device: "str | torch.device" = "cpu",
                 dtype: torch.dtype | None = None) -> nn.Module:
    """The vocos or HiFi-GAN vocoder at ``path`` (see the module doc)."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return Vocoder.from_pretrained(path, device=device, dtype=dtype)
    if path.exists() and is_hifigan_folder(path):
        return HiFiGAN.from_pretrained(path, device=device, dtype=dtype)
    raise FileNotFoundError(
        f"{path} is neither a vocos folder ({CONFIG_FILE} + weights) nor a HiFi-GAN folder or "
        "checkpoint (config.json with upsample_rates etc. + model.safetensors or a generator checkpoint)")
