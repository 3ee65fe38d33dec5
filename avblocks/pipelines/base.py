"""The base of every pipeline: one folder in (``from_pretrained``), one folder out
(``save_pretrained``), the components moved together (``to``).

    from avblocks.pipelines import Pipeline
    pipe = Pipeline.from_pretrained("outputs/demo/pipeline")   # the class the folder names
    pipe(labels=[0]).save("clip.mp4")

A subclass declares its components (``components``: name -> the class saved in that
sub-folder) and how to rebuild itself from them, the :class:`~avblocks.spec.AVSpec` and its
``settings`` (plain JSON: sampling defaults, layout choices). :mod:`avblocks.pipelines.folder`
holds the folder format and its checks.
"""

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

import avblocks
from avblocks.audio.vocoder import GriffinLim
from avblocks.audio.vocoder_folder import VOCODER_CLASSES
from avblocks.device import resolve_device
from avblocks.pipelines.folder import (
    FORMAT_VERSION,
    component_folder,
    read_manifest,
    verify_files,
    write_folder,
)
from avblocks.saveload import CheckpointError
from avblocks.spec import AVSpec

__all__ = ["Pipeline", "PIPELINES", "InWeightsDtype", "VOCODER_CLASSES", "audio_inverse", "inverse_parts",
           "inverse_settings"]

PIPELINES: dict[str, type["Pipeline"]] = {}
"""Every pipeline class by name: what ``pipeline.json``'s ``class`` may say."""


def inverse_settings(inverse: nn.Module | None) -> dict[str, Any]:
    """How a pipeline folder records its audio inverse (a component or Griffin-Lim's settings)."""
    if inverse is None or isinstance(inverse, GriffinLim):
        g = inverse or GriffinLim.__init__.__kwdefaults__
        keys = ("n_iter", "momentum", "nnls_iter")
        return {"kind": "griffin_lim"} | {k: (getattr(g, k) if inverse is not None else g[k]) for k in keys}
    for name, klass in VOCODER_CLASSES.items():
        if isinstance(inverse, klass):
            return {"kind": "vocoder", "component": name}
    raise ValueError(f"cannot save an audio inverse of type {type(inverse).__name__}")


def inverse_parts(inverse: nn.Module | None) -> dict[str, nn.Module]:
    """The component a pipeline folder holds for its audio inverse (none for Griffin-Lim)."""
    settings = inverse_settings(inverse)
    return {settings["component"]: inverse} if "component" in settings else {}


def audio_inverse(spec: AVSpec, settings: dict[str, Any], components: dict[str, nn.Module]) -> nn.Module:
    """The audio inverse :func:`inverse_settings` recorded."""
    kind = settings.get("kind")
    if kind == "griffin_lim":
        return GriffinLim(mel=spec.mel, **{k: v for k, v in settings.items() if k != "kind"})
    if kind == "vocoder":
        return components[settings["component"]]
    raise CheckpointError(f"unknown audio inverse {kind!r} (known: 'griffin_lim', 'vocoder')")


class InWeightsDtype(nn.Module):
    """Runs a denoiser loaded in another dtype (``from_pretrained(dtype=torch.bfloat16)``) inside
    a float32 sampler: data-like inputs (floating tensors of 3 or more axes: latents, frames,
    audio codes) are cast to the weights' dtype, timesteps stay float32 (the denoisers embed
    them in float32), and the output comes back as float32, so the solver's arithmetic keeps
    its precision. The identity when the weights are float32."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.dtype = next(model.parameters()).dtype

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # the wrapped denoiser's attributes (frames, null_label, ...)
            return getattr(super().__getattr__("model"), name)

    def forward(self, *args, **kwargs):
        if self.dtype == torch.float32:
            return self.model(*args, **kwargs)

        def cast(x):
            return x.to(self.dtype) if torch.is_tensor(x) and x.is_floating_point() and x.ndim >= 3 else x

        out = self.model(*(cast(a) for a in args), **{k: cast(v) for k, v in kwargs.items()})
        return out.float()


class Pipeline:
    """Shared ``from_pretrained`` / ``save_pretrained`` / ``to`` of the system pipelines."""

    components: ClassVar[dict[str, type | tuple[type, ...]]] = {}
    """Component name -> class, or the classes it may be (with ``from_pretrained`` /
    ``save_pretrained``); the folder records which one it holds."""

    spec: AVSpec
    codec: nn.Module  # media <-> what the denoiser sees
    denoiser: nn.Module

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        PIPELINES[cls.__name__] = cls

    # ------------------------------------------------------------ subclass hooks
    def modules(self) -> dict[str, nn.Module]:
        """The components to save, by name (optional ones present only when used)."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Plain-JSON settings a reload needs besides the components and the spec."""
        raise NotImplementedError

    @classmethod
    def from_parts(cls, spec: AVSpec, modules: dict[str, nn.Module], settings: dict[str, Any]) -> "Pipeline":
        raise NotImplementedError

    # ------------------------------------------------------------ folder
    def save_pretrained(self, folder: "str | os.PathLike[str]") -> Path:
        """Write the whole pipeline into ``folder`` (replacing it atomically)."""
        modules = self.modules()
        unknown = sorted(set(modules) - set(self.components))
        if unknown:
            raise ValueError(f"{type(self).__name__}: components {unknown} are not declared")
        manifest = {
            "class": type(self).__name__, "format_version": FORMAT_VERSION,
            "avblocks_version": avblocks.__version__, "spec": self.spec.to_dict(),
            "settings": self.settings(),
            "components": {name: type(module).__name__ for name, module in modules.items()},
        }

        def write(tmp: Path) -> None:
            for name, module in modules.items():
                module.save_pretrained(tmp / name)

        return write_folder(folder, manifest, write)

    @classmethod
    def from_pretrained(cls, folder: "str | os.PathLike[str]", *, device: "str | torch.device" = "auto",
                        dtype: torch.dtype | None = None, verify: bool = True) -> "Pipeline":
        """Load a folder written by :meth:`save_pretrained`: checks every file's SHA-256 first
        (``verify=False`` skips that), reads nothing outside the folder, unpickles nothing.

        ``device``: ``"auto"`` (the GPU when CUDA is there, else the CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"`` (:func:`avblocks.device.resolve_device`)."""
        manifest = read_manifest(folder)
        name = manifest["class"]
        if name not in PIPELINES:
            raise CheckpointError(f"{Path(folder) / 'pipeline.json'}: unknown pipeline class {name!r} "
                                  f"(known: {sorted(PIPELINES)})")
        klass = PIPELINES[name]
        if cls is not Pipeline and klass is not cls:
            raise CheckpointError(f"{folder} holds a {name}, not a {cls.__name__}")
        if verify:
            verify_files(folder, manifest)
        try:
            spec = AVSpec.from_dict(manifest["spec"])
        except ValueError as e:
            raise CheckpointError(f"{Path(folder) / 'pipeline.json'}: bad spec: {e}") from e
        modules = {}
        for part, saved_class in manifest["components"].items():
            allowed = klass.components.get(part, ())
            allowed = allowed if isinstance(allowed, tuple) else (allowed,)
            found = [c for c in allowed if c.__name__ == saved_class]
            if not found:
                names = " or ".join(c.__name__ for c in allowed) or "no such component"
                raise CheckpointError(f"{Path(folder) / 'pipeline.json'}: component {part!r} is a {saved_class}; "
                                      f"{name} expects {names}")
            modules[part] = found[0].from_pretrained(component_folder(folder, manifest, part))
        return klass.from_parts(spec, modules, manifest["settings"]).to(device, dtype)

    # ------------------------------------------------------------ device
    def to(self, device: "str | torch.device | None" = None, dtype: torch.dtype | None = None) -> "Pipeline":
        """Move the codec (its tables stay float32: spectrograms need it) to ``device`` and the
        denoiser to ``device`` / ``dtype``; a device name is resolved as in :meth:`from_pretrained`."""
        device = None if device is None else resolve_device(device)
        self.codec.to(device)
        self.denoiser.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device
