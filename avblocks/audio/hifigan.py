"""HiFi-GAN (Kong et al., 2020) behind the avblocks vocoder interface: :class:`HiFiGAN`.

The generator is built from HiFi-GAN's own ``config.json`` (the V1, V2 and V3 shapes:
``resblock`` ``"1"`` or ``"2"``, ``upsample_rates``, ``upsample_kernel_sizes``,
``upsample_initial_channel``, ``resblock_kernel_sizes``, ``resblock_dilation_sizes``) with
the module names of the original code, so its checkpoints load by their own keys.

Choices:

- **Weights.** The original checkpoint format ``{"generator": state_dict}`` (``generator_*.pth.tar``,
  ``g_XXXXXXXX``), read with ``torch.load(weights_only=True)`` (a file that needs to unpickle
  code is refused, naming it). Its convolutions carry weight normalisation (``weight_g`` /
  ``weight_v``, or ``parametrizations.weight.original0/1``); it is removed for inference by
  folding ``w = g * v / ||v||`` (norm over every axis but the first, as
  ``torch.nn.utils.weight_norm`` does), so the network holds plain convolutions. Missing or
  unexpected keys and wrong shapes are a :class:`~avblocks.saveload.CheckpointError` naming
  the file and the keys.
- **Mel.** The config's audio fields give the :class:`MelConfig` (:meth:`MelConfig.hifigan`
  with its ``sampling_rate``, ``n_fft``, ``hop_size``, ``num_mels``, ``fmin``, ``fmax``);
  ``win_size`` must equal ``n_fft`` and the upsampling rates must multiply to ``hop_size``.
  ``decode`` refuses a mel made with other settings, field by field.
- **Length.** ``cols`` columns give ``hop * cols`` samples: with the HiFi-GAN padding column
  ``j`` is centred at ``(j + 1/2) * hop``, so a video-like clip of ``t * w`` columns comes
  back as exactly ``t * sr / fps`` samples.
- **Folder.** :meth:`HiFiGAN.save_pretrained` writes ``config.json`` (HiFi-GAN's own, unchanged) and
  ``model.safetensors`` (the folded weights); :meth:`HiFiGAN.from_pretrained` reads such a folder,
  an original HiFi-GAN folder (``config.json`` and one checkpoint) or a checkpoint file
  whose folder holds ``config.json``. Local files only.
"""

import json
import os
import pickle
from collections.abc import Mapping
from math import prod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from avblocks.atomic import atomic_path, atomic_write_text
from avblocks.audio.mel import MelConfig
from avblocks.audio.vocoder import check_bins, check_mel
from avblocks.saveload import CheckpointError, load_state_dict_strict
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["HiFiGAN", "is_hifigan_folder"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".ckpt")
_LRELU_SLOPE = 0.1
_GENERATOR_KEYS = ("resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                   "resblock_kernel_sizes", "resblock_dilation_sizes")
_AUDIO_KEYS = ("num_mels", "n_fft", "hop_size", "win_size", "sampling_rate", "fmin", "fmax")


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class _ResBlock1(nn.Module):
    """V1/V2 residual block: per dilation, a dilated and an undilated convolution."""

    def __init__(self, channels: int, kernel: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel))
                                    for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, _LRELU_SLOPE)), _LRELU_SLOPE))
        return x


class _ResBlock2(nn.Module):
    """V3 residual block: one dilated convolution per dilation."""

    def __init__(self, channels: int, kernel: int, dilations: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))
                                   for d in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, _LRELU_SLOPE))
        return x


def _checked_config(config: Mapping, source: str) -> dict[str, Any]:
    missing = [k for k in _GENERATOR_KEYS + _AUDIO_KEYS if k not in config]
    if missing:
        raise ValueError(f"{source}: HiFi-GAN config lacks {missing}")
    if str(config["resblock"]) not in ("1", "2"):
        raise ValueError(f"{source}: resblock ({config['resblock']!r}) must be '1' (V1/V2) or '2' (V3)")
    rates, kernels = list(config["upsample_rates"]), list(config["upsample_kernel_sizes"])
    if len(rates) != len(kernels) or not rates:
        raise ValueError(f"{source}: upsample_rates {rates} and upsample_kernel_sizes {kernels} must be "
                         "non-empty lists of one length")
    if prod(rates) != config["hop_size"]:
        raise ValueError(f"{source}: upsample_rates {rates} multiply to {prod(rates)}, not hop_size "
                         f"({config['hop_size']}): one column must give hop_size samples")
    if config["win_size"] != config["n_fft"]:
        raise ValueError(f"{source}: win_size ({config['win_size']}) must equal n_fft ({config['n_fft']}); "
                         "MelConfig has no shorter window")
    if len(config["resblock_kernel_sizes"]) != len(config["resblock_dilation_sizes"]):
        raise ValueError(f"{source}: resblock_kernel_sizes and resblock_dilation_sizes differ in length")
    return json.loads(json.dumps(dict(config)))  # a plain deep copy


def is_hifigan_folder(path: "str | os.PathLike[str]") -> bool:
    """Whether ``path`` is a HiFi-GAN folder or checkpoint (a ``config.json`` with HiFi-GAN's
    generator keys next to it)."""
    path = Path(path)
    config = (path if path.is_dir() else path.parent) / CONFIG_FILE
    try:
        return all(k in json.loads(config.read_text()) for k in _GENERATOR_KEYS)
    except (OSError, ValueError, TypeError):
        return False


def _fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace every weight-normalised ``(g, v)`` pair by its weight ``g * v / ||v||``."""
    out, pairs = {}, {}
    for key, value in state.items():
        for g_suffix, v_suffix in ((".weight_g", ".weight_v"),
                                   (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            if key.endswith(g_suffix) or key.endswith(v_suffix):
                base = key[: -len(g_suffix)] if key.endswith(g_suffix) else key[: -len(v_suffix)]
                pairs.setdefault(base, {})["g" if key.endswith(g_suffix) else "v"] = value
                break
        else:
            out[key] = value
    for base, pair in pairs.items():
        if set(pair) != {"g", "v"}:  # half a pair: kept under its own name, refused as unexpected
            out |= {f"{base}.weight_{half}": value for half, value in pair.items()}
            continue
        g, v = pair["g"].float(), pair["v"].float()
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
        out[f"{base}.weight"] = v * (g / norm)
    return out


def _read_checkpoint(path: Path) -> dict[str, Tensor]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a HiFi-GAN checkpoint that loads with weights_only=True "
                              f"(plain tensors, no pickled code): {type(e).__name__}: {str(e).splitlines()[0]}") from e
    state = payload.get("generator") if isinstance(payload, dict) and "generator" in payload else payload
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected {{'generator': state_dict}} (HiFi-GAN's format) or a state "
                              f"dict of tensors, got {type(payload).__name__}")
    return state


def _checkpoint_in(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if p.is_file() and (
        p.name.endswith(_CHECKPOINT_SUFFIXES) or p.name.startswith(("g_", "generator"))))
    if len(found) != 1:
        raise CheckpointError(f"{folder}: expected {WEIGHTS_FILE} or one HiFi-GAN generator checkpoint "
                              f"(g_*, generator*, *.pth.tar), found {[p.name for p in found]}; "
                              "name the checkpoint file itself")
    return found[0]


class HiFiGAN(nn.Module):
    """HiFi-GAN's generator (weight norm removed) with the vocoder interface (module doc).

    Args:
        config: HiFi-GAN's ``config.json`` as a dict (generator and audio keys; training keys
            are kept and ignored). The network is randomly initialised: load weights with
            :meth:`from_pretrained` or :meth:`from_checkpoint`.
    """

    def __init__(self, *, config: Mapping):
        super().__init__()
        self.config = _checked_config(config, "HiFiGAN config")
        c = self.config
        self._mel = MelConfig.hifigan(sample_rate=int(c["sampling_rate"]), n_fft=int(c["n_fft"]),
                                      hop=int(c["hop_size"]), n_mels=int(c["num_mels"]),
                                      f_min=float(c["fmin"]), f_max=None if c["fmax"] is None else float(c["fmax"]),
                                      pad=(int(c["n_fft"]) - int(c["hop_size"])) // 2)
        channels = int(c["upsample_initial_channel"])
        block = _ResBlock1 if str(c["resblock"]) == "1" else _ResBlock2
        self.conv_pre = nn.Conv1d(self._mel.n_mels, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(c["upsample_rates"], c["upsample_kernel_sizes"])):
            width = channels // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(channels // 2**i, width, kernel, rate, padding=(kernel - rate) // 2))
            for k, d in zip(c["resblock_kernel_sizes"], c["resblock_dilation_sizes"]):
                self.resblocks.append(block(width, k, list(d)))
        self.conv_post = nn.Conv1d(width, 1, 7, padding=3)
        self.num_kernels = len(c["resblock_kernel_sizes"])

    # ------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, checkpoint: "str | os.PathLike[str]",
                        config: "Mapping | str | os.PathLike[str]") -> "HiFiGAN":
        """A generator from an original checkpoint file and its config (a dict or a path)."""
        checkpoint = Path(checkpoint)
        if not isinstance(config, Mapping):
            config = _read_json(Path(config))
        model = cls(config=config)
        state = _fold_weight_norm(_read_checkpoint(checkpoint))
        load_state_dict_strict(model, state, source=str(checkpoint))
        return model.eval()

    @classmethod
    def from_pretrained(cls, path: "str | os.PathLike[str]", *, device: "str | torch.device" = "cpu",
                        dtype: torch.dtype | None = None) -> "HiFiGAN":
        """A folder (``config.json`` + ``model.safetensors`` or one original checkpoint) or a
        checkpoint file next to its ``config.json``."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        if not path.exists():
            raise FileNotFoundError(f"no HiFi-GAN folder or checkpoint at {path}")
        config = _read_json(folder / CONFIG_FILE)
        if path.is_dir() and (folder / WEIGHTS_FILE).is_file():
            model = cls(config=config)
            load_state_dict_strict(model, load_file(folder / WEIGHTS_FILE), source=str(folder / WEIGHTS_FILE))
            model = model.eval()
        else:
            model = cls.from_checkpoint(path if path.is_file() else _checkpoint_in(folder), config)
        return model.to(device=device, dtype=dtype)

    def save_pretrained(self, path: "str | os.PathLike[str]") -> None:
        """``config.json`` (HiFi-GAN's own) + ``model.safetensors`` (weight norm folded), each atomic."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
        atomic_write_text(folder / CONFIG_FILE, json.dumps(self.config, indent=2) + "\n")

    # ------------------------------------------------------------ interface
    @property
    def mel(self) -> MelConfig:
        """The settings of the log-mels this vocoder was trained on."""
        return self._mel

    def output_length(self, columns: int) -> int:
        """Samples produced for ``columns`` mel columns: ``hop * columns``."""
        return self._mel.hop * columns

    def generate(self, mel: Tensor) -> Tensor:
        """The generator itself: ``b f cols`` -> ``b n`` (gradients flow)."""
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, _LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        # the original's last activation uses leaky_relu's default slope (0.01), not 0.1
        return torch.tanh(self.conv_post(F.leaky_relu(x)))[:, 0]

    @shapecheck
    def decode(self, mel: Float[Tensor, "b f cols"], mel_config: MelConfig, *,
               grad: bool = False) -> Float[Tensor, "b n"]:
        """Waveform from a log-mel made with ``mel_config`` (must equal :attr:`mel`)."""
        check_mel(self._mel, mel_config, "HiFiGAN")
        check_bins(mel, self._mel)
        dtype = next(self.parameters()).dtype
        if grad:
            return self.generate(mel.to(dtype)).to(mel.dtype)
        with torch.no_grad():
            return self.generate(mel.to(dtype)).to(mel.dtype)

    @shapecheck
    def forward(self, mel: Float[Tensor, "b f cols"], mel_config: MelConfig) -> Float[Tensor, "b n"]:
        """Gradient-keeping decode (``decode(..., grad=True)``)."""
        return self.decode(mel, mel_config, grad=True)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} at {path} (HiFi-GAN's generator config)")
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a HiFi-GAN config is a JSON object, got {type(config).__name__}")
    return _checked_config(config, str(path))
