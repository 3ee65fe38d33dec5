"""Recipe configs: a dataclass tree, filled from a YAML file and `key=value` overrides.

    python -m recipes.proav_dit.train_autoencoder --config recipes/proav_dit/configs/tiny.yaml \
        train.steps=200 model.channels=32

Overrides use dotted paths into the dataclass tree; values are parsed as YAML scalars (so
`1e-3`, `true`, `[1, 4, 4]` and `null` mean what they look like). Everything is validated by
:func:`avblocks.config.config_from_dict` before anything is built: an unknown key, a wrong type,
a missing required field or a value that breaks the rule its field declares
(:mod:`avblocks.config_rules`) fails with an error that names the key; a YAML syntax error names
the file, line and column. What spans several fields is each recipe's ``validate``, made of
:func:`require` (and :func:`require_fits` for what must fit in memory).
"""

import argparse
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

from avblocks.atomic import atomic_write_text
from avblocks.config import ConfigError, config_from_dict, config_to_dict
from avblocks.memory import MemoryLimitError, check_fits

C = TypeVar("C")

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")  # YAML 1.1 reads 1e-3 as a string


def parse_value(text: str) -> Any:
    if _FLOAT.match(text):
        return float(text)
    return yaml.safe_load(text)


def apply_override(tree: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {override!r} has an empty key")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = parse_value(text.strip())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: ``{}``); errors name the file."""
    if not Path(path).is_file():
        hint = "" if Path(path).suffix else " (a shipped config by name: avblocks run RECIPE --config NAME)"
        raise ConfigError(f"config file {path} does not exist{hint}")
    try:
        with open(path, encoding="utf-8") as stream:  # a stream: the error marks name the file
            loaded = yaml.safe_load(stream)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read: {e}") from e
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
    return loaded or {}


def load_config(config_class: type[C], path: str | Path | None = None, overrides=()) -> C:
    """Build ``config_class`` from an optional YAML file and a list of ``key=value`` strings."""
    tree: dict[str, Any] = {}
    if path is not None:
        tree = read_yaml(path)
    for override in overrides:
        apply_override(tree, override)
    return config_from_dict(config_class, tree)


def dump_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def require(ok: bool, message: str) -> None:
    """The one check every recipe's ``validate`` is made of: a :class:`ConfigError` with
    ``message`` (which names the fields and their values) unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def require_fits(what: str, nbytes: float) -> None:
    """:func:`require` for memory: a :class:`ConfigError` when ``what`` (which names the fields
    and their values) would need more than the memory limit (:mod:`avblocks.memory`)."""
    try:
        check_fits(what, nbytes)
    except MemoryLimitError as e:
        raise ConfigError(str(e)) from None


def parse_cli(config_class: type[C], argv=None, description: str = "") -> C:
    """``--config FILE`` plus ``key=value`` overrides; ``--print-config`` shows the result."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument("--print-config", action="store_true", help="print the config and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    args = parser.parse_args(argv)
    try:
        config = load_config(config_class, args.config, args.overrides)
    except ConfigError as error:  # one line naming the key, not argparse's usage block
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        raise SystemExit(0)
    return config
