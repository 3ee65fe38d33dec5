"""Configs and the save/load convention of every composite module.

A composite module is built from plain keyword arguments; its *config* is a dataclass whose
fields are exactly those keyword arguments. A module opts in with :class:`SaveLoadMixin`::

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
  "config": {<fields>}}``. Tuples are written as JSON lists and turned back into tuples from
  the dataclass type hints. :func:`config_from_dict` rejects unknown keys, missing required
  keys and wrong types with a :class:`ConfigError` that names the key.
- Weights: ``model.safetensors`` (the module's ``state_dict``, CPU, contiguous; tensors
  that share storage are cloned so safetensors accepts them). Its metadata carries the same
  ``save_id`` as ``config.json``.
- Atomicity: both files are first written completely to temporary files *in the target
  folder* and fsynced; only then is each moved over its final name with ``os.replace``
  (weights first, then config) and the folder is fsynced. A crash before the first replace
  leaves the previous save untouched (and no temporary files, which are removed on error).
  The one window left, between the two replaces, leaves new weights with the old config:
  the ``save_id`` then differs between the files and :meth:`SaveLoadMixin.from_pretrained`
  refuses the folder with an error saying so, instead of loading a torn pair silently.
- Loading is strict: any missing key, unexpected key or shape mismatch raises a
  :class:`CheckpointError` naming every offending key. Dtypes are cast to the module's.

:func:`atomic_write` / :func:`atomic_path` are the same temp-file + fsync + replace step for
any single file (recipe checkpoints, mp4 files, JSON logs).
"""

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ConfigError",
    "CheckpointError",
    "SaveLoadMixin",
    "atomic_path",
    "atomic_write",
    "config_to_dict",
    "config_from_dict",
    "load_state_dict_strict",
    "check_int",
]


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} ({value!r}) must be an integer >= {minimum}")
    return value

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

C = TypeVar("C")
M = TypeVar("M", bound="SaveLoadMixin")


class ConfigError(ValueError):
    """A config dict or dataclass does not match its dataclass (unknown key, wrong type...)."""


class CheckpointError(ValueError):
    """A saved folder cannot be loaded into a module (missing/unexpected keys, shapes...)."""


# --------------------------------------------------------------------------------------------
# Atomic file writes
# --------------------------------------------------------------------------------------------


def _temp_name(path: Path) -> Path:
    # Keep the suffix last so writers that pick a format from the extension (PyAV: ".mp4")
    # still work on the temporary file; leading dot keeps it out of casual listings.
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the rename durable; not every platform/file system supports it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _temp_path(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; remove it if the block raises."""
    tmp = _temp_name(path)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager: write to the yielded temporary path; on success it replaces ``path``.

    The temporary file lives in the same folder as ``path`` (so ``os.replace`` is an atomic
    rename on one file system) and ends with the same suffix. On success it is fsynced,
    renamed over ``path`` and the folder is fsynced. If the block raises, the temporary file
    is removed and ``path`` is left exactly as it was. The parent folder must exist.

    >>> with atomic_path("ckpt/step_100.pt") as tmp:
    ...     torch.save(state, tmp)
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"parent folder of {str(path)!r} does not exist")
    with _temp_path(path) as tmp:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create the temporary file {tmp}")
        _fsync_file(tmp)
        os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], Any]) -> Path:
    """Write a file atomically: ``write_fn(tmp_path)`` writes it, then it replaces ``path``.

    See :func:`atomic_path`. Returns ``path`` as a :class:`~pathlib.Path`.

    >>> atomic_write("out/metrics.json", lambda p: p.write_text(json.dumps(metrics)))
    """
    with atomic_path(path) as tmp:
        write_fn(tmp)
    return Path(path)


# --------------------------------------------------------------------------------------------
# Config <-> dict with validation
# --------------------------------------------------------------------------------------------


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-ready dict (tuples become lists, nested configs dicts)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"expected a dataclass instance, got {type(config).__name__}")
    return {f.name: _to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def config_from_dict(config_class: type[C], data: dict[str, Any]) -> C:
    """Build ``config_class`` from a dict, checking keys and types against its type hints.

    Raises :class:`ConfigError` naming the key for: unknown keys, missing required keys,
    values of the wrong type (``int`` is accepted for ``float``; ``bool`` is not an ``int``;
    lists are accepted for tuples and converted). Nested dataclass fields take dicts.
    """
    if not (dataclasses.is_dataclass(config_class) and isinstance(config_class, type)):
        raise ConfigError(f"{config_class!r} is not a dataclass type")
    return _build(config_class, data, config_class.__name__)


def _build(config_class: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a dict, got {type(data).__name__} ({data!r})")
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys are {', '.join(map(repr, fields))}"
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    hints = typing.get_type_hints(config_class)
    kwargs = {name: _coerce(data[name], hints[name], f"{where}.{name}") for name in data}
    return config_class(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type hint ``tp``; return it converted (lists -> tuples)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:  # Optional[X]: X's own error is the precise one
            return _coerce(value, options[0], where)
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            f"{where}: {value!r} matches none of {_type_name(tp)} ({'; '.join(errors)})"
        )
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected None, got {value!r}")
        return None
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            value = config_to_dict(value)
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool, got {type(value).__name__} ({value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} ({value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {type(value).__name__} ({value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {type(value).__name__} ({value!r})")
        return value
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"{where}: expected {_type_name(tp)} with {len(args)} items, "
                f"got {len(value)} ({list(value)!r})"
            )
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        key_t, val_t = args if args else (Any, Any)
        return {
            _coerce(k, key_t, f"{where} key"): _coerce(v, val_t, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    raise ConfigError(f"{where}: unsupported config field type {_type_name(tp)}")


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
        weights_path, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
        with _temp_path(weights_path) as tmp_weights, _temp_path(config_path) as tmp_config:
            save_file(_cpu_state(self), str(tmp_weights), metadata={"save_id": save_id})
            tmp_config.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
            _fsync_file(tmp_weights)
            _fsync_file(tmp_config)
            os.replace(tmp_weights, weights_path)
            os.replace(tmp_config, config_path)
        _fsync_dir(directory)
        return directory

    @classmethod
    def load_config(cls, directory: str | os.PathLike) -> Any:
        """Read and validate ``directory/config.json`` as ``cls.config_class``."""
        config, _ = _read_config(cls, Path(directory))
        return config

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
        config, save_id = _read_config(cls, directory)
        weights_path = directory / WEIGHTS_NAME
        if not weights_path.is_file():
            raise CheckpointError(f"{weights_path} does not exist")
        with safe_open(str(weights_path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        if metadata.get("save_id") != save_id:
            raise CheckpointError(
                f"{directory}: {CONFIG_NAME} (save_id {save_id}) and {WEIGHTS_NAME} "
                f"(save_id {metadata.get('save_id')}) come from different saves; "
                "the folder was left between two writes"
            )
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


def _read_config(cls: type, directory: Path) -> tuple[Any, str | None]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
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
    return config_from_dict(cls.config_class, payload["config"]), payload.get("save_id")
