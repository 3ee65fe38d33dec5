"""Rules a config field declares next to itself, checked whenever a config is built::

    @dataclass
    class OptimConfig:
        lr: Annotated[float, above(0)] = 1e-3
        warmup: Annotated[int, at_least(0)] = 50
        ema_decay: Annotated[float, in_range(0, 1, hi_open=True)] = 0.995
        log_every: Annotated[int, at_least(1), CHANGEABLE] = 10

:func:`avblocks.config.config_from_dict` (and so every recipe's YAML and ``key=value``
overrides, and every saved ``config.json``) checks each field's rules after its type; a
config built in Python is checked with :func:`~avblocks.config.check_fields`. A broken rule is a
:class:`~avblocks.config.ConfigError` in one format, ``KEY (VALUE) must RULE``::

    AutoencoderRecipe.optim.lr (-1.0) must be > 0
    AutoencoderRecipe.data.folder ('clips/') must be an existing folder

Choices (documented because callers rely on them):

- A subclass that redeclares a field *without* ``Annotated`` (to change its default) keeps the
  parent's rules, so a new default never loosens a bound; one that redeclares it *with*
  ``Annotated`` replaces them (READ's ``optim.steps`` admits 0: a skipped stage).
- ``None`` passes every rule (optional fields); tuples and lists are checked item by item and
  the error names the item (``model.video_patch[1]``).
- Floats are always finite (:func:`avblocks.config.config_from_dict` refuses NaN and
  infinities for every ``float`` field, declared or not), so a bound is never met by NaN.
- :data:`CHANGEABLE` is not a check: it marks a field that may differ when a run folder is
  resumed with another config (``run.log_every``, ``optim.steps``); recipes read it with
  :func:`is_changeable`.
- A rule says what is true of one value. What spans several fields (a patch that must divide
  a size) stays in the recipe's ``validate``.
"""

import dataclasses
import inspect
import math
import os
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = [
    "CHANGEABLE",
    "PROBABILITY",
    "SEED",
    "WEIGHT",
    "Bound",
    "ExistingPath",
    "Rule",
    "above",
    "at_least",
    "at_most",
    "broken_rules",
    "existing_dir",
    "existing_file",
    "existing_path",
    "field_rules",
    "in_range",
    "is_changeable",
    "show",
]


class Rule:
    """One condition on a field's value; ``broken(value)`` says what the value must do
    (``"be > 0"``, ``"lie in [0, 1)"``) when it does not, else None."""

    def broken(self, value: Any) -> str | None:
        raise NotImplementedError


def _number(x: float) -> str:
    return str(int(x)) if isinstance(x, (int, float)) and float(x).is_integer() and abs(x) < 1e15 else repr(x)


@dataclass(frozen=True)
class Bound(Rule):
    """``lo <= value <= hi`` (either side open or absent); the value must also be finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"lie in {left}{_number(self.lo)}, {_number(self.hi)}{right}"
        if self.lo is not None:
            return f"be {'>' if self.lo_open else '>='} {_number(self.lo)}"
        return f"be {'<' if self.hi_open else '<='} {_number(self.hi)}"

    def broken(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
            return None  # a type the field's hint admits besides numbers (checked there)
        if isinstance(value, float) and not math.isfinite(value):
            return f"be finite and {self.describe().removeprefix('be ')}"
        low_ok = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        high_ok = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return None if low_ok and high_ok else self.describe()


@dataclass(frozen=True)
class ExistingPath(Rule):
    """The value names an existing folder (``kind="dir"``), file (``kind="file"``) or
    either (``kind="any"``)."""

    kind: str = "dir"

    def broken(self, value: Any) -> str | None:
        if not isinstance(value, (str, os.PathLike)):
            return None
        check, what = {"dir": (os.path.isdir, "folder"), "file": (os.path.isfile, "file"),
                       "any": (os.path.exists, "file or folder")}[self.kind]
        return None if check(value) else f"be an existing {what}"


class _Changeable:
    def __repr__(self) -> str:
        return "CHANGEABLE"


CHANGEABLE = _Changeable()
"""Marks a field that may change when a run is resumed (logging, the step budget...)."""


def at_least(lo: float) -> Bound:
    """``value >= lo``."""
    return Bound(lo=lo)


def above(lo: float) -> Bound:
    """``value > lo``."""
    return Bound(lo=lo, lo_open=True)


def at_most(hi: float) -> Bound:
    """``value <= hi``."""
    return Bound(hi=hi)


def in_range(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Bound:
    """``lo <= value <= hi``, either end open when asked."""
    return Bound(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


existing_dir = ExistingPath("dir")
"""The value names an existing folder."""
existing_file = ExistingPath("file")
"""The value names an existing file."""
existing_path = ExistingPath("any")
"""The value names an existing file or folder."""

SEED = in_range(0, 2**31 - 1)
"""A seed every generator here accepts, with room for the offsets recipes add to it."""
PROBABILITY = in_range(0, 1)
"""A probability or a share: in [0, 1]."""
WEIGHT = in_range(0, 1000)
"""A loss weight: a larger one turns an O(1) loss into an overflow, not a stronger signal."""


def _own_annotations(klass: type) -> dict[str, Any]:
    return inspect.get_annotations(klass, eval_str=True)


def field_rules(config_class: type) -> dict[str, tuple[Any, ...]]:
    """``{field name: its Annotated metadata}`` (rules and markers), parents' included (see
    the module docstring for how a subclass inherits or replaces them)."""
    merged: dict[str, tuple[Any, ...]] = {}
    for klass in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for name, hint in _own_annotations(klass).items():
            if typing.get_origin(hint) is typing.Annotated:
                merged[name] = tuple(hint.__metadata__)
            else:
                merged.setdefault(name, ())
    return merged


def show(value: Any) -> str:
    """A value as a message shows it (fractions as ``30000/1001``)."""
    if isinstance(value, Fraction):
        return str(value)
    return repr(value)


def _items(value: Any, where: str) -> Iterator[tuple[Any, str]]:
    if isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _items(item, f"{where}[{i}]")
    else:
        yield value, where


def broken_rules(config: Any, where: str = "") -> list[str]:
    """Every broken rule of the dataclass ``config`` and its nested configs, as messages."""
    found = []
    rules = field_rules(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += broken_rules(value, key)
            continue
        for rule in rules.get(f.name, ()):
            if not isinstance(rule, Rule):
                continue
            for item, item_key in _items(value, key):
                if item is not None and (why := rule.broken(item)) is not None:
                    found.append(f"{item_key} ({show(item)}) must {why}")
    return found


def is_changeable(config_class: type, key: str) -> bool:
    """Whether the dotted ``key`` (``run.log_every``) of ``config_class`` is marked
    :data:`CHANGEABLE`; a key that names no field is not."""
    parts = key.split(".")
    klass = config_class
    for part in parts[:-1]:
        hints = typing.get_type_hints(klass)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            return False
        klass = hints[part]
    return any(m is CHANGEABLE for m in field_rules(klass).get(parts[-1], ()))
