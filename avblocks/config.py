"""Dataclass configs <-> plain dicts, with validation that names the offending key.

Every composite module has a *config*: a dataclass whose fields are its constructor's
keyword arguments (:mod:`avblocks.saveload` saves it as ``config.json``; recipes read theirs
from YAML). This module turns such a config into a JSON-ready dict and back.

Choices (documented because callers rely on them):

- Tuples are written as JSON lists and turned back into tuples from the dataclass type
  hints; nested dataclass configs become nested dicts.
- :func:`config_from_dict` rejects unknown keys, missing required keys and wrong types with
  a :class:`ConfigError` that names the key (``int`` is accepted for ``float``; ``bool`` is
  not an ``int``; a ``float`` must be finite), then checks the rules each field declares
  next to itself (:mod:`avblocks.config_rules`), every broken one in the format
  ``KEY (VALUE) must RULE``. :func:`check_fields` does the same for a config built in
  Python.
"""

import dataclasses
import math
import types
import typing
from fractions import Fraction
from typing import Any, Literal, TypeVar, Union

from avblocks.config_rules import broken_rules
from avblocks.timing import as_fraction

__all__ = [
    "ConfigError",
    "config_to_dict",
    "config_from_dict",
    "check_fields",
    "check_int",
]


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} ({value!r}) must be an integer >= {minimum}")
    return value


C = TypeVar("C")


class ConfigError(ValueError):
    """A config dict or dataclass does not match its dataclass (unknown key, wrong type...)."""


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
    if isinstance(value, Fraction):  # "p/q", or the integer itself when it is one
        return value.numerator if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
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
    return check_fields(_build(config_class, data, config_class.__name__))


def check_fields(config: C) -> C:
    """``config`` itself if every field meets the rules it declares
    (:mod:`avblocks.config_rules`), nested configs included; else a :class:`ConfigError`
    listing every broken rule as ``KEY (VALUE) must RULE``."""
    broken = broken_rules(config, type(config).__name__)
    if broken:
        raise ConfigError("; ".join(broken))
    return config


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
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{where} ({value!r}) must be a finite number")
        return number
    if tp is Fraction:  # exact rates: 8, "30000/1001", 23.4375 (avblocks.timing.as_fraction)
        try:
            return as_fraction(value, where, positive=False)
        except ValueError as e:
            raise ConfigError(str(e)) from e
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
