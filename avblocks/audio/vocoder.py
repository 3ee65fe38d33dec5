"""Log-mel spectrogram -> waveform: the real vocos model (:class:`Vocoder`) and the analytic
no-weights fallback (:class:`GriffinLim`).

Both share one interface: ``.mel`` (the :class:`MelConfig` they expect) and
``decode(mel, mel_config) -> b n``, which refuses, with a :class:`ValueError` naming each field
and both values, a spectrogram made with other settings. Both produce ``hop * cols`` samples
for ``cols`` columns: with the column convention of :class:`~avblocks.audio.video_like.VideoLikeAudio` (``t*w`` centred
columns for ``t*w*hop`` samples, the end-boundary column dropped) that is exactly the
duration of the video.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torchaudio
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from avblocks.atomic import atomic_write, atomic_write_text
from avblocks.audio.mel import MelConfig
from avblocks.saveload import reading
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["Vocoder", "GriffinLim", "vocos_config"]

_NNLS_EPS = 1e-9  # positive start for the multiplicative updates (a zero would stay zero)
_MEL_FEATURES = "vocos.feature_extractors.MelSpectrogramFeatures"
_PARTS = ("feature_extractor", "backbone", "head")
CONFIG_FILE = "config.yaml"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"


def check_mel(own: MelConfig, given: MelConfig, who: str) -> None:
    if not isinstance(given, MelConfig):
        raise ValueError(f"mel_config must be a MelConfig, got {type(given).__name__}")
    diffs = own.differences(given)
    if diffs:
        raise ValueError(
            f"{who} expects a mel made with its own settings; mismatched fields "
            f"(vocoder != given): {'; '.join(diffs)}"
        )


def check_bins(mel: Tensor, own: MelConfig) -> None:
    if mel.shape[1] != own.n_mels:
        raise ValueError(f"mel has {mel.shape[1]} bins, expected n_mels = {own.n_mels}")


def _mel_of_features(features: nn.Module) -> MelConfig:
    """The :class:`MelConfig` equivalent to a vocos ``MelSpectrogramFeatures`` module."""
    from vocos.feature_extractors import MelSpectrogramFeatures

    if not isinstance(features, MelSpectrogramFeatures):
        raise ValueError(
            f"Vocoder supports vocos' MelSpectrogramFeatures only, got {type(features).__name__}"
        )
    if features.padding != "center":
        raise ValueError(
            f"Vocoder supports feature padding 'center' only (column j centred at j*hop), "
            f"got padding {features.padding!r}"
        )
    spec = features.mel_spec
    if spec.win_length != spec.n_fft:
        raise ValueError(f"win_length ({spec.win_length}) must equal n_fft ({spec.n_fft})")
    return MelConfig(
        sample_rate=int(spec.sample_rate),
        n_fft=int(spec.n_fft),
        hop=int(spec.hop_length),
        n_mels=int(spec.n_mels),
        f_min=float(spec.f_min),
        f_max=None if spec.f_max is None else float(spec.f_max),
        window="hann",  # MelSpectrogramFeatures always uses torchaudio's default Hann window
        center=bool(spec.spectrogram.center),
        pad_mode=spec.spectrogram.pad_mode,
        power=float(spec.power),
        mel_scale=spec.mel_scale.mel_scale,
        norm=spec.mel_scale.norm,
        log_floor=1e-7,  # vocos.modules.safe_log's clip value
    )


def vocos_config(
    *,
    mel: MelConfig,
    dim: int = 512,
    intermediate_dim: int = 1536,
    num_layers: int = 8,
    head_padding: str = "same",
) -> dict:
    """A vocos hparams dict (the ``config.yaml`` layout ``Vocos.from_hparams`` reads) for a
    mel-input vocos with a ConvNeXt backbone and an ISTFT head. Defaults are the sizes of
    the released ``vocos-mel-24khz``."""
    vocos_mel = MelConfig(
        sample_rate=mel.sample_rate, n_fft=mel.n_fft, hop=mel.hop, n_mels=mel.n_mels
    )
    diffs = vocos_mel.differences(mel)
    if diffs:
        raise ValueError(
            "vocos' MelSpectrogramFeatures fixes these settings; mismatched fields "
            f"(vocos != given): {'; '.join(diffs)}"
        )
    if head_padding not in ("same", "center"):
        raise ValueError(f"head_padding ({head_padding!r}) must be 'same' or 'center'")
    return {
        "feature_extractor": {
            "class_path": _MEL_FEATURES,
            "init_args": {
                "sample_rate": mel.sample_rate,
                "n_fft": mel.n_fft,
                "hop_length": mel.hop,
                "n_mels": mel.n_mels,
                "padding": "center",
            },
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {
                "input_channels": mel.n_mels,
                "dim": dim,
                "intermediate_dim": intermediate_dim,
                "num_layers": num_layers,
            },
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {
                "dim": dim,
                "n_fft": mel.n_fft,
                "hop_length": mel.hop,
                "padding": head_padding,
            },
        },
    }


class Vocoder(nn.Module):
    """A real :class:`vocos.Vocos` (mel features) behind the avblocks vocoder interface.

    Args:
        config: vocos hparams, the dict ``Vocos.from_hparams`` reads from ``config.yaml``
            (``feature_extractor`` / ``backbone`` / ``head``, each ``class_path`` +
            ``init_args``). Only classes from the ``vocos`` package are instantiated (a config
            file never imports arbitrary code); the feature extractor must be
            ``MelSpectrogramFeatures`` with ``padding="center"``.

    The model is built with vocos' own ``instantiate_class`` and randomly initialised; use
    :meth:`from_dir` to load weights and :meth:`from_config` to build one from a
    :class:`MelConfig`. ``self.vocos`` is the wrapped module.

    Output length (ISTFT head): ``padding="same"`` gives ``hop * cols`` samples for ``cols``
    columns (``(cols-1)*hop + n_fft - 2*((n_fft-hop)//2)``, i.e. ``+1`` if ``n_fft - hop`` is
    odd); ``padding="center"`` gives ``(cols-1) * hop`` (``torch.istft``). See
    :meth:`output_length`.
    """

    def __init__(self, *, config: Mapping):
        super().__init__()
        from vocos import Vocos
        from vocos.pretrained import instantiate_class

        for part in _PARTS:
            if part not in config or "class_path" not in config[part]:
                raise ValueError(f"vocos config needs '{part}' with a 'class_path'")
            path = str(config[part]["class_path"])
            if not path.startswith("vocos."):
                raise ValueError(
                    f"{part}.class_path ({path!r}) must name a class of the vocos package"
                )
        parts = {part: instantiate_class(args=(), init=dict(config[part])) for part in _PARTS}
        self.vocos = Vocos(**parts)
        self.config = yaml.safe_load(yaml.safe_dump(_plain(config)))  # a plain deep copy
        self._mel = _mel_of_features(self.vocos.feature_extractor)
        if getattr(self.vocos.backbone, "adanorm", False):
            raise ValueError("Vocoder does not support adanorm (bandwidth-conditioned) backbones")
        istft = getattr(self.vocos.head, "istft", None)
        if istft is not None and istft.hop_length != self._mel.hop:
            raise ValueError(
                f"head hop_length ({istft.hop_length}) must equal the features' hop "
                f"({self._mel.hop})"
            )

    # ------------------------------------------------------------ building
    @classmethod
    def from_config(
        cls,
        *,
        mel: MelConfig | None = None,
        dim: int = 512,
        intermediate_dim: int = 1536,
        num_layers: int = 8,
        head_padding: str = "same",
    ) -> "Vocoder":
        """A randomly initialised vocos for ``mel`` (default :meth:`MelConfig.vocos`); see
        :func:`vocos_config`. Tests use tiny sizes (``dim=32, intermediate_dim=64,
        num_layers=1``)."""
        mel = MelConfig.vocos() if mel is None else mel
        config = vocos_config(
            mel=mel,
            dim=dim,
            intermediate_dim=intermediate_dim,
            num_layers=num_layers,
            head_padding=head_padding,
        )
        return cls(config=config)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "Vocoder":
        """Load a vocos folder: ``config.yaml`` plus ``model.safetensors`` (preferred) or
        ``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``). Local files only,
        never the network. Missing ``feature_extractor.*`` buffers are allowed (they are
        rebuilt from the config); any other missing or unexpected key is an error."""
        folder = Path(path)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in {folder}")
        with open(config_path) as f:
            config = yaml.safe_load(f)
        model = cls(config=config)
        if (folder / SAFETENSORS_FILE).is_file():
            with reading(folder / SAFETENSORS_FILE):
                state = load_file(folder / SAFETENSORS_FILE, device="cpu")
        elif (folder / TORCH_FILE).is_file():
            with reading(folder / TORCH_FILE):
                state = torch.load(folder / TORCH_FILE, map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"no {SAFETENSORS_FILE} or {TORCH_FILE} in {folder}")
        result = model.vocos.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("feature_extractor.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"weights in {folder} do not match the config: missing {missing}, "
                f"unexpected {list(result.unexpected_keys)}"
            )
        return model.eval()

    def save_dir(self, path: str | os.PathLike) -> None:
        """Write ``config.yaml`` and ``model.safetensors`` (each atomically: temp file +
        rename), readable by :meth:`from_dir` and by ``Vocos.from_hparams``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.vocos.state_dict().items()}
        atomic_write_text(folder / CONFIG_FILE, yaml.safe_dump(self.config, sort_keys=False))
        atomic_write(folder / SAFETENSORS_FILE, lambda tmp: save_file(state, str(tmp)))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: "str | torch.device" = "cpu",
                        dtype: torch.dtype | None = None) -> "Vocoder":
        """:meth:`from_dir`, then ``.to(device, dtype)``: the name every pipeline component has."""
        return cls.from_dir(path).to(device=device, dtype=dtype)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """:meth:`save_dir`: the name every pipeline component has."""
        self.save_dir(path)

    # ------------------------------------------------------------ interface
    @property
    def mel(self) -> MelConfig:
        """The settings of the log-mels this vocoder was built for."""
        return self._mel

    def output_length(self, columns: int) -> int:
        """Samples produced for ``columns`` mel columns (from the ISTFT head's settings)."""
        istft = getattr(self.vocos.head, "istft", None)
        if istft is None:
            raise NotImplementedError(f"no length rule for head {type(self.vocos.head).__name__}")
        if istft.padding == "center":
            return (columns - 1) * istft.hop_length
        pad = (istft.win_length - istft.hop_length) // 2
        return (columns - 1) * istft.hop_length + istft.win_length - 2 * pad

    @shapecheck
    def decode(
        self, mel: Float[Tensor, "b f cols"], mel_config: MelConfig, *, grad: bool = False
    ) -> Float[Tensor, "b n"]:
        """Waveform from a log-mel made with ``mel_config`` (must equal :attr:`mel`).

        ``grad=False`` calls ``Vocos.decode`` (under ``torch.inference_mode``; the result is
        cloned out of inference mode so it is an ordinary tensor). ``grad=True`` calls the
        backbone and head directly so gradients flow to ``mel`` and to the weights.
        """
        check_mel(self._mel, mel_config, "Vocoder")
        check_bins(mel, self._mel)
        if grad:
            return self.vocos.head(self.vocos.backbone(mel))
        return self.vocos.decode(mel).clone()

    @shapecheck
    def forward(
        self, mel: Float[Tensor, "b f cols"], mel_config: MelConfig
    ) -> Float[Tensor, "b n"]:
        """Gradient-keeping decode (``decode(..., grad=True)``)."""
        return self.decode(mel, mel_config, grad=True)


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class GriffinLim(nn.Module):
    """Analytic mel inverse: pseudo-inverse of the mel filterbank, then Griffin-Lim.

    Steps (choices documented):

    1. ``exp`` undoes the log (silence comes back as ``log_floor``, not 0).
    2. Linear spectrogram: start from the minimum-norm least-squares solution
       ``pinv(fb^T) @ mel`` (pseudo-inverse precomputed once) clamped to a tiny positive
       value, then ``nnls_iter`` multiplicative non-negative least-squares updates (Lee & Seung)
       fit ``fb^T @ linear`` to the mel while staying non-negative. Clamping alone leaves a
       mean log-mel error of about 0.3-0.5 on a harmonic tone; 32 updates bring it to about
       0.06-0.12, for a few milliseconds (matmuls only; no autograd, no optimiser).
    3. One column is appended (a copy of the last): the column centred on the end boundary
       that :class:`~avblocks.audio.video_like.VideoLikeAudio` drops, so ``torchaudio.functional.griffinlim`` with
       ``length = hop * cols`` sees a spectrogram consistent with its own STFT of that length.
       HiFi-GAN's columns (:meth:`MelConfig.hifigan`, centred at ``(j + 1/2) * hop``) are the
       centred columns of the waveform delayed by half a hop: a copy of the first column is
       prepended and one of the last appended, Griffin-Lim runs on ``cols + 2`` centred
       columns, and the ``hop * cols`` samples from ``hop / 2`` on are returned (``hop`` even).
    4. ``torchaudio.functional.griffinlim`` with the config's ``n_fft``, ``hop``, window and
       ``power`` (centred, reflect padding; ``n_iter`` iterations of fast Griffin-Lim with
       ``momentum``). Phase starts at zero (``rand_init=False``) so the output is
       deterministic.

    Output length: ``hop * cols``.

    Args:
        mel: the settings the log-mels are made with: centred with reflect padding (what
            torchaudio's Griffin-Lim uses), or HiFi-GAN's reflect padding with an even hop.
        n_iter: Griffin-Lim iterations.
        momentum: fast Griffin-Lim momentum in ``[0, 1)``.
        rand_init: random initial phase instead of zero.
        nnls_iter: multiplicative non-negative least-squares refinements of the linear
            spectrogram after the pseudo-inverse (0 = clamped pseudo-inverse only).
    """

    def __init__(
        self,
        *,
        mel: MelConfig,
        n_iter: int = 32,
        momentum: float = 0.99,
        rand_init: bool = False,
        nnls_iter: int = 32,
    ):
        super().__init__()
        half_hop = mel.half_hop_columns and mel.hop % 2 == 0
        if not ((mel.center or half_hop) and mel.pad_mode == "reflect"):
            raise ValueError(
                f"GriffinLim needs pad_mode='reflect' (torchaudio's STFT in Griffin-Lim) and "
                f"center=True, or center=False with pad = (n_fft - hop) / 2 and an even hop; got "
                f"center={mel.center}, pad={mel.pad}, hop={mel.hop}, pad_mode={mel.pad_mode!r}"
            )
        if n_iter < 1:
            raise ValueError(f"n_iter ({n_iter}) must be at least 1")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum ({momentum}) must be in [0, 1)")
        self._mel = mel
        self.n_iter = n_iter
        self.momentum = momentum
        self.rand_init = rand_init
        if nnls_iter < 0:
            raise ValueError(f"nnls_iter ({nnls_iter}) must be at least 0")
        self.nnls_iter = nnls_iter
        fb = mel.filterbank().double()  # (n_freqs, n_mels): mel = fb^T @ spec
        self.register_buffer("fb", fb.float(), persistent=False)
        self.register_buffer("inverse_fb", torch.linalg.pinv(fb.T).float(), persistent=False)
        self.register_buffer("window", mel.window_tensor(), persistent=False)

    @property
    def mel(self) -> MelConfig:
        """The settings of the log-mels this inverse expects."""
        return self._mel

    def output_length(self, columns: int) -> int:
        """Samples produced for ``columns`` mel columns: ``hop * columns``."""
        return self._mel.hop * columns

    @shapecheck
    def decode(self, mel: Float[Tensor, "b f cols"], mel_config: MelConfig) -> Float[Tensor, "b n"]:
        """Waveform from a log-mel made with ``mel_config`` (must equal :attr:`mel`)."""
        check_mel(self._mel, mel_config, "GriffinLim")
        check_bins(mel, self._mel)
        cfg = self._mel
        if cfg.hop * mel.shape[-1] <= cfg.n_fft // 2:
            raise ValueError(
                f"GriffinLim needs more than n_fft // 2 = {cfg.n_fft // 2} output samples for "
                f"its reflect-padded STFT; {mel.shape[-1]} column(s) give {cfg.hop * mel.shape[-1]}"
            )
        target = mel.exp()
        fb = self.fb.to(mel.dtype)
        linear = torch.einsum("km,bmc->bkc", self.inverse_fb.to(mel.dtype), target)
        linear = linear.clamp(min=_NNLS_EPS)
        rhs = torch.einsum("km,bmc->bkc", fb, target)
        for _ in range(self.nnls_iter):
            # Multiplicative non-negative least-squares update (Lee & Seung): stays >= 0 and
            # does not increase ||fb^T @ linear - target||.
            fitted = torch.einsum("km,bkc->bmc", fb, linear)
            linear = linear * rhs / torch.einsum("km,bmc->bkc", fb, fitted).clamp(min=1e-12)
        cols = mel.shape[-1]
        if cfg.center:
            linear, length, skip = torch.cat([linear, linear[..., -1:]], dim=-1), cfg.hop * cols, 0
        else:  # half-hop columns: the centred columns of the waveform delayed by hop / 2
            linear = torch.cat([linear[..., :1], linear, linear[..., -1:]], dim=-1)
            length, skip = cfg.hop * (cols + 1), cfg.hop // 2
        wave = torchaudio.functional.griffinlim(
            linear,
            window=self.window.to(mel.dtype),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop,
            win_length=cfg.n_fft,
            power=cfg.power,
            n_iter=self.n_iter,
            momentum=self.momentum,
            length=length,
            rand_init=self.rand_init,
        )
        return wave[..., skip : skip + cfg.hop * cols]

    @shapecheck
    def forward(
        self, mel: Float[Tensor, "b f cols"], mel_config: MelConfig
    ) -> Float[Tensor, "b n"]:
        return self.decode(mel, mel_config)

    def extra_repr(self) -> str:
        return (
            f"n_iter={self.n_iter}, momentum={self.momentum}, rand_init={self.rand_init}, "
            f"nnls_iter={self.nnls_iter}"
        )
