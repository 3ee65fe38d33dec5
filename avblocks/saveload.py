"""The save/load convention of every composite module: ``config.json`` + ``model.safetensors``.

A composite module is built from plain keyword arguments; its *config* is a dataclass whose
fields are exactly those keyword arguments (:mod:`avblocks.config` turns it into a dict and
back). A module opts in with :class:`SaveLoadMixin`::

    @dataclass
    class CodecConfig:
        channels: int = 64
        patch: tuple[int, int, int] = (1, 4, 4)

    class Codec(SaveLoadMixin, nn.Module):
        config_class = CodecConfig

        def __init__(self, *, channels: int = 64, patch: tuple[int, int, int] = (1, 4, 4)):
            super().__init__()
            ...

    codec = Codec(channels=32)
    codec.config                       # CodecConfig(channels=32, patch=(1, 4, 4)), recorded
    codec.save_pretrained("ckpt/")     # ckpt/config.json + ckpt/model.safetensors
    Codec.from_pretrained("ckpt/")     # strict: names missing/unexpected keys, shape mismatches
    Codec.from_config(CodecConfig())   # validates field types first

Choices (documented because callers rely on them):

- ``module.config`` is recorded automatically from the arguments of the outermost
  ``__init__`` (defaults filled in); the mixin checks at class-definition time that the
  constructor's parameters are keyword-only and are exactly the config's fields.
- ``config.json`` holds ``{"class": <class name>, "format_version": 1, "save_id": <uuid>,
  "config": {<fields>}}``, the fields as :func:`avblocks.config.config_to_dict` writes them
  and read back through :func:`avblocks.config.config_from_dict`.
- Weights: ``model.safetensors`` (the module's ``state_dict``, CPU, contiguous; tensors
  that share storage are cloned so safetensors accepts them). Its metadata carries the same
  ``save_id`` as ``config.json``.
- Each file proves the other (:mod:`avblocks.checksums`): ``config.json`` records the SHA-256
  of ``model.safetensors`` (``"sha256"``), and the weights' metadata records the SHA-256 of
  the config (``config_sha256``, over its canonical JSON). Loading checks both before using
  either, so a flipped byte anywhere is an error naming the file and the check, never one
  changed weight. A folder saved before these records existed loads unchecked.
- Every loading error names the file (:func:`reading`): a truncated or foreign file is a
  :class:`CheckpointError` saying which file and what the reader said.
- Atomicity (:func:`avblocks.atomic.atomic_path`): both files are first written completely
  to temporary files *in the target folder*; only then is each fsynced and moved over its
  final name with ``os.replace`` (weights first, then config) and the folder is fsynced. A
  crash before the first replace leaves the previous save untouched (and no temporary
  files, which are removed on error). The one window left, between the two replaces, leaves
  new weights with the old config: the ``save_id`` then differs between the files and
  :meth:`SaveLoadMixin.from_pretrained` refuses the folder with an error saying so, instead
  of loading a torn pair silently.
- Loading is strict: any missing key, unexpected key or shape mismatch raises a
  :class:`CheckpointError` naming every offending key. Dtypes are cast to the module's.
"""

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import pickle
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from avblocks.atomic import atomic_path
from avblocks.checksums import mismatch, sha256
from avblocks.config import ConfigError, config_from_dict, config_to_dict

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "SaveLoadMixin",
    "UnsafeFileError",
    "load_state_dict_strict",
    "reading",
]

CONFIG_NAME = "config.json"
"""A module folder's config file."""
WEIGHTS_NAME = "model.safetensors"
"""A module folder's weights file."""
FORMAT_VERSION = 1
"""The module-folder format this version writes (recorded in the config)."""

M = TypeVar("M", bound="SaveLoadMixin")


class CheckpointError(ValueError):
    """A saved folder cannot be loaded into a module (missing/unexpected keys, shapes...)."""


class UnsafeFileError(CheckpointError, pickle.UnpicklingError):
    """A file that names code to run when unpickled; refused (it is never run)."""


@contextlib.contextmanager
def reading(path: "str | os.PathLike[str]") -> Iterator[None]:
    """Inside, any failure to read ``path`` (a truncated zip, a bad header, an empty file) is a
    :class:`CheckpointError` that names it (:class:`UnsafeFileError`, also an
    ``UnpicklingError``, for a file that would run code); one that already is passes."""
    try:
        yield
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(f"{path} cannot be read ({type(e).__name__}: {e})") from e
    except Exception as e:  # the readers raise anything from EOFError to RuntimeError
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {e})") from e


def _config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        # safetensors refuses tensors that share memory (tied weights): store a copy.
        if t.numel() > 0 and key in seen:
            t = t.clone()
        seen.add(key)
        state[name] = t
    return state


def load_state_dict_strict(
    module: nn.Module, state: dict[str, torch.Tensor], *, source: str = "state dict"
) -> None:
    """``module.load_state_dict(state)`` after checking keys and shapes; the error names them.

    Raises :class:`CheckpointError` listing every missing key, unexpected key and shape
    mismatch (``key: saved (2, 3) vs module (3, 3)``) before anything is copied.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: saved {tuple(state[k].shape)} vs module {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_listing(mismatched)}")
    if problems:
        raise CheckpointError(
            f"cannot load {source} into {type(module).__name__}: " + "; ".join(problems)
        )
    module.load_state_dict(state, strict=True)


def _listing(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


# --------------------------------------------------------------------------------------------
# The mixin
# --------------------------------------------------------------------------------------------


class SaveLoadMixin:
    """``from_config`` / ``save_pretrained`` / ``from_pretrained`` for an ``nn.Module``.

    Subclasses set ``config_class`` (a dataclass whose fields are the constructor's
    keyword-only parameters) and list the mixin before ``nn.Module`` in their bases. See the
    module docstring for the folder format and the atomicity guarantee.
    """

    config_class: ClassVar[type]
    config: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__ or "config_class" not in _mro_dict(cls):
            return
        init = cls.__dict__["__init__"]
        _check_signature(cls, init)
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            # Only the outermost constructor records the config (subclasses call super()).
            if type(self).__init__ is __init__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                values = dict(bound.arguments)
                values.pop(next(iter(signature.parameters)))  # self
                object.__setattr__(self, "config", type(self).config_class(**values))

        cls.__init__ = __init__  # type: ignore[method-assign]

    @classmethod
    def from_config(cls: type[M], config: Any) -> M:
        """Build the module from its config (a ``config_class`` instance or a plain dict)."""
        if isinstance(config, dict):
            config = config_from_dict(cls.config_class, config)
        elif not isinstance(config, cls.config_class):
            raise ConfigError(
                f"{cls.__name__}.from_config expects {cls.config_class.__name__} or a dict, "
                f"got {type(config).__name__}"
            )
        else:  # re-validate field types of a config built in Python
            config = config_from_dict(cls.config_class, config_to_dict(config))
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``directory`` atomically."""
        if not isinstance(self, nn.Module):
            raise TypeError("SaveLoadMixin must be mixed into an nn.Module")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_id = uuid.uuid4().hex
        payload = {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "save_id": save_id,
            "config": config_to_dict(self.config),
        }
        # Both files are written in full before either is renamed; the inner block exits
        # first, so the weights replace their old file before the config does.
        with (
            atomic_path(directory / CONFIG_NAME) as tmp_config,
            atomic_path(directory / WEIGHTS_NAME) as tmp_weights,
        ):
            metadata = {"save_id": save_id, "config_sha256": _config_digest(payload["config"])}
            save_file(_cpu_state(self), str(tmp_weights), metadata=metadata)
            payload["sha256"] = {WEIGHTS_NAME: sha256(tmp_weights)}
            tmp_config.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
        return directory

    @classmethod
    def load_config(cls, directory: str | os.PathLike) -> Any:
        """Read and validate ``directory/config.json`` as ``cls.config_class``."""
        return _read_config(cls, Path(directory))[0]

    @classmethod
    def from_pretrained(
        cls: type[M],
        directory: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> M:
        """Rebuild from ``directory/config.json`` and load ``model.safetensors`` strictly."""
        directory = Path(directory)
        config, payload = _read_config(cls, directory)
        save_id = payload.get("save_id")
        weights_path = directory / WEIGHTS_NAME
        if not weights_path.is_file():
            raise CheckpointError(f"{weights_path} does not exist")
        recorded = payload.get("sha256", {}).get(WEIGHTS_NAME) if isinstance(payload.get("sha256"), dict) else None
        damaged = recorded and mismatch(weights_path, recorded, str(directory / CONFIG_NAME))
        try:
            with reading(weights_path), safe_open(str(weights_path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except CheckpointError:
            if damaged:
                raise CheckpointError(damaged) from None
            raise
        if metadata.get("save_id") != save_id:  # the more precise diagnosis of a hash mismatch
            raise CheckpointError(
                f"{directory}: {CONFIG_NAME} (save_id {save_id}) and {WEIGHTS_NAME} "
                f"(save_id {metadata.get('save_id')}) come from different saves; "
                "the folder was left between two writes"
            )
        if damaged:
            raise CheckpointError(damaged)
        digest = metadata.get("config_sha256")
        if digest is not None and digest != _config_digest(payload["config"]):
            raise CheckpointError(
                f"{directory / CONFIG_NAME} is damaged: its config's SHA-256 is "
                f"{_config_digest(payload['config'])}, {WEIGHTS_NAME} records {digest}")
        module = cls.from_config(config)
        load_state_dict_strict(module, state, source=str(weights_path))  # type: ignore[arg-type]
        return module.to(device=device, dtype=dtype)  # type: ignore[attr-defined,return-value]


def _mro_dict(cls: type) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass))
    return merged


def _check_signature(cls: type, init: Callable) -> None:
    config_class = cls.config_class
    params = list(inspect.signature(init).parameters.values())[1:]
    not_kwonly = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    if not_kwonly:
        raise TypeError(
            f"{cls.__name__}.__init__ parameters {not_kwonly} must be keyword-only (after '*')"
        )
    names = {p.name for p in params}
    fields = {f.name for f in dataclasses.fields(config_class)}
    if names != fields:
        raise TypeError(
            f"{cls.__name__}.__init__ parameters and {config_class.__name__} fields differ: "
            f"only in __init__ {sorted(names - fields)}, only in config {sorted(fields - names)}"
        )


def _read_config(cls: type, directory: Path) -> tuple[Any, dict[str, Any]]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    for key in ("class", "config"):
        if key not in payload:
            raise CheckpointError(f"{path} has no {key!r} entry")
    if payload["class"] != cls.__name__:
        raise CheckpointError(
            f"{path} was saved from {payload['class']}, cannot load it as {cls.__name__}"
        )
    if payload.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {payload['format_version']}, expected {FORMAT_VERSION}"
        )
    try:
        config = config_from_dict(cls.config_class, payload["config"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    return config, payload
