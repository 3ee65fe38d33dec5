"""Rerunning a run folder with another config: what may change, checked before anything is written.

A rerun on an existing ``run.output_dir`` resumes it (:mod:`recipes.common.checkpoint`), so
its config must describe the same run. :func:`check_rerun` compares the new config with the
folder's saved ``config.yaml`` *before* :func:`recipes.common.loop.start_run` writes it
again:

- fields marked :data:`~avblocks.config_rules.CHANGEABLE` next to their declaration
  (logging, checkpoint cadence, the time budget, the non-finite policy, ``optim.steps``) may
  differ; the differences are returned, and ``start_run`` prints them and records them in the
  run's ``log.jsonl``;
- any other difference (model shape, data, learning rate, seed...) is refused with a
  :class:`~avblocks.config.ConfigError` naming each field with its saved and new value;
- ``optim.steps`` (per stage) may grow, never shrink below the step a checkpoint of the run
  already holds;
- ``run.output_dir`` itself is not compared (the same folder may be named differently), nor
  are fields the saved config does not have (added to avblocks after it was written: the run
  ran with their defaults' behaviour or none).
"""

import re
from pathlib import Path
from typing import Any

import yaml

from avblocks.config import ConfigError, config_to_dict
from avblocks.config_rules import is_changeable
from recipes.common.config import read_yaml

__all__ = ["check_rerun", "config_changes", "latest_step"]

_STEP = re.compile(r"^step_(\d{8})\.(pt|dcp)$")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(config: Any, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every field that differs."""
    # the saved YAML holds what config_to_dict wrote; compare like with like
    new = _flatten(yaml.safe_load(yaml.safe_dump(config_to_dict(config))))
    old = _flatten(saved)
    return {key: (old[key], value) for key, value in new.items()
            if key in old and key != "run.output_dir" and old[key] != value}


def latest_step(directory: Path) -> int | None:
    """The step of the newest checkpoint (file or sharded folder) in ``directory``."""
    if not directory.is_dir():
        return None
    steps = [int(m.group(1)) for p in directory.iterdir() if (m := _STEP.match(p.name))]
    return max(steps, default=None)


def check_rerun(config: Any, out: Path, stages: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    """The allowed changes of ``config`` against ``out/config.yaml`` (empty for a new folder);
    a :class:`ConfigError` for the others. ``stages`` maps a checkpoint folder (relative to
    ``out``) to the config section whose ``steps`` it counts (``{"checkpoints": "optim"}``)."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return {}
    saved = read_yaml(saved_path)
    changes = config_changes(config, saved)
    fixed = [f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items()
             if not is_changeable(type(config), key)]
    if fixed:
        raise ConfigError(
            f"{out} holds a run made with another config ({saved_path}); resuming it cannot change "
            f"{'; '.join(fixed)}. Give another run.output_dir, or delete the folder to start over")
    for folder, section in stages.items():
        step = latest_step(out / folder)
        steps = getattr(config, section).steps
        if step is not None and steps < step:
            raise ConfigError(
                f"{section}.steps ({steps}) is fewer than the {step} steps the run's checkpoints in "
                f"{out / folder} already hold; give at least {step}, or another run.output_dir")
    return changes
