"""A real feature network (I3D, VGGish, or any) exported with TorchScript, from a local file.

:class:`TorchScriptFeatures` is a :class:`~avblocks.metrics.features.FeatureExtractor` for
one modality; it follows that module's input conventions and maps them onto what the
exported module expects (frame size, value range, sample rate).
"""

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torchaudio

from avblocks.metrics.features import (
    FeatureExtractor,
    _resize_frames,
    check_video,
    check_waveform,
)
from avblocks.typing import Float, Shaped, Tensor, shapecheck

__all__ = ["TorchScriptFeatures", "load_torchscript"]


def load_torchscript(path: "str | Path", what: str) -> torch.jit.ScriptModule:
    """A TorchScript archive from a local file, in eval mode on the CPU; ``what`` names the
    model in errors (a missing file, or a file that is not TorchScript). ``torch.jit`` is
    deprecated in recent PyTorch but still loads; its warning is silenced for this one load."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript {what} {str(path)!r} does not exist (models are loaded "
                                "from a local file only; nothing is downloaded)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
            module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise ValueError(f"{str(path)!r} is not a TorchScript archive (save one with torch.jit.save; a "
                         f"state dict from torch.save is not enough): {error}") from error
    return module.eval()


class TorchScriptFeatures(FeatureExtractor):
    """A feature network exported with TorchScript (``torch.jit.save``), loaded from a local
    file with ``torch.jit.load(path, map_location="cpu")``; never from the network.

    Args:
        path: the ``.pt`` / ``.torchscript`` archive. TorchScript archives carry code: load
            only files you trust. (``torch.jit`` is deprecated in recent PyTorch but still
            loads; the archive format is what I3D/VGGish ports ship. Its deprecation warning
            is silenced for this one load.)
        modality: ``"video"`` or ``"audio"``: the one method this extractor provides.
        input_size: video only: ``(h, w)`` every frame is resized to before the call
            (bilinear, antialiased); ``None`` keeps the size. I3D ports expect ``(224, 224)``.
        value_range: video only: the range the module expects; the [-1, 1] input is mapped
            linearly onto it. I3D ports take ``(-1, 1)`` (the default); a module that wants
            bytes-as-floats takes ``(0, 255)``.
        sample_rate: audio only, required: the rate the module expects its waveform at
            (VGGish: 16000); inputs are resampled to it.
        call_kwargs: extra keyword arguments for every call of the module (some I3D exports
            take flags such as ``return_features=True``).

    The module is called as ``module(video b 3 t h w, **call_kwargs)`` or
    ``module(waveform b n, **call_kwargs)``. Its output must be a tensor: ``b d`` is used as
    is; ``b k d`` (one embedding per segment, as VGGish gives one per 0.96 s) is averaged
    over ``k`` to one vector per clip; ``b d 1 ... 1`` is flattened. Anything else raises.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        modality: Literal["video", "audio"],
        input_size: tuple[int, int] | None = None,
        value_range: tuple[float, float] = (-1.0, 1.0),
        sample_rate: int | None = None,
        call_kwargs: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        path = Path(path)
        if modality not in ("video", "audio"):
            raise ValueError(f"modality ({modality!r}) must be 'video' or 'audio'")
        if modality == "audio" and sample_rate is None:
            raise ValueError(
                "an audio extractor needs sample_rate: the rate its module expects (VGGish: 16000)"
            )
        if sample_rate is not None and (isinstance(sample_rate, bool) or sample_rate <= 0):
            raise ValueError(f"sample_rate ({sample_rate!r}) must be a positive int")
        if input_size is not None and (len(input_size) != 2 or min(input_size) < 1):
            raise ValueError(f"input_size ({input_size!r}) must be (h, w) with positive sizes")
        if not value_range[1] > value_range[0]:
            raise ValueError(f"value_range ({value_range!r}) must be (low, high) with high > low")
        self.module = load_torchscript(path, "feature extractor")
        self.path = path
        self.modalities = (modality,)
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.sample_rate = sample_rate
        self.call_kwargs = dict(call_kwargs or {})

    def _pooled(self, out: Any, batch: int) -> Tensor:
        if not isinstance(out, Tensor):
            raise ValueError(
                f"{self.path.name} returned {type(out).__name__}, expected a tensor of features"
            )
        if out.ndim >= 1 and out.shape[0] != batch:
            raise ValueError(
                f"{self.path.name} returned shape {tuple(out.shape)} for a batch of {batch}"
            )
        if out.ndim == 2:
            return out.float()
        if out.ndim == 3:
            return out.float().mean(dim=1)
        if out.ndim > 3 and all(s == 1 for s in out.shape[2:]):
            return out.float().flatten(1)
        raise ValueError(
            f"{self.path.name} returned shape {tuple(out.shape)}; expected b d, b k d "
            "(segments, averaged) or b d 1 ... 1"
        )

    @shapecheck
    def video_features(self, video: Shaped[Tensor, "b c t h w"]) -> Float[Tensor, "b d"]:
        if "video" not in self.modalities:
            return super().video_features(video)
        x = check_video(video)
        if self.input_size is not None:
            x = _resize_frames(x, self.input_size)
        low, high = self.value_range
        if (low, high) != (-1.0, 1.0):
            x = (x + 1) * ((high - low) / 2) + low
        return self._pooled(self.module(x, **self.call_kwargs), video.shape[0])

    @shapecheck
    def audio_features(
        self, waveform: Shaped[Tensor, "*batch n"], sample_rate: int
    ) -> Float[Tensor, "b d"]:
        if "audio" not in self.modalities:
            return super().audio_features(waveform, sample_rate)
        x = check_waveform(waveform, sample_rate)
        assert self.sample_rate is not None
        if sample_rate != self.sample_rate:
            x = torchaudio.functional.resample(x, sample_rate, self.sample_rate)
        return self._pooled(self.module(x, **self.call_kwargs), waveform.shape[0])

    def extra_repr(self) -> str:
        return (
            f"path={str(self.path)!r}, modality={self.modalities[0]!r}, "
            f"input_size={self.input_size}, value_range={self.value_range}, "
            f"sample_rate={self.sample_rate}"
        )
