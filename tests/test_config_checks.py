"""Every config value checked before anything is written; reruns that change the config.

The values are those a hostile but fair user tried on ``recipes.proav_dit.train_autoencoder``
(they used to train uphill, fail after ``config.yaml`` was written, or pass silently); each is
now refused before the output folder exists, with one message naming key, value and rule.
"""

import json
import math
from dataclasses import dataclass, field
from typing import Annotated

import pytest
import torch
from tiny_runs import AUTOENCODER

from avblocks.config import ConfigError, check_fields, config_from_dict
from avblocks.config_rules import CHANGEABLE, above, at_least, in_range, is_changeable
from recipes.common.config import load_config
from recipes.proav_dit import train_autoencoder
from recipes.proav_dit.config import AutoencoderRecipe
from recipes.read_a2v.config import ReadRecipe

TINY = [*AUTOENCODER, "optim.steps=4", "run.checkpoint_every=2"]


def refusal(tmp_path, capsys, *overrides: str) -> str:
    """The message a refused run gives; the run must have written nothing."""
    out = tmp_path / "run"
    with pytest.raises((SystemExit, ConfigError)) as info:
        train_autoencoder.main([*TINY, *overrides, f"run.output_dir={out}"])
    assert not out.exists()
    return str(info.value) if isinstance(info.value, ConfigError) else capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("optim.grad_clip=-1", "AutoencoderRecipe.optim.grad_clip (-1.0) must be >= 0"),
    ("optim.lr=-1", "AutoencoderRecipe.optim.lr (-1.0) must lie in (0, 10]"),
    ("optim.lr=.nan", "AutoencoderRecipe.optim.lr (nan) must be a finite number"),
    ("optim.lr=1e400", "AutoencoderRecipe.optim.lr (inf) must be a finite number"),
    ("optim.ema_decay=2", "AutoencoderRecipe.optim.ema_decay (2.0) must lie in [0, 1)"),
    ("data.sample_rate=0", "AutoencoderRecipe.data.sample_rate (0) must lie in [1, 384000]"),
    ("data.n_fft=1", "AutoencoderRecipe.data.n_fft (1) must be >= 2"),
    ("data.folder=/no/such/folder", "AutoencoderRecipe.data.folder ('/no/such/folder') must be an existing folder"),
    ("data.vocoder=/no/vocoder", "AutoencoderRecipe.data.vocoder ('/no/vocoder') must be an existing file or folder"),
    ("model.latent_channels=0", "AutoencoderRecipe.model.latent_channels (0) must be >= 1"),
    ("optim.warmup=-10", "AutoencoderRecipe.optim.warmup (-10) must be >= 0"),
    ("run.max_minutes=-1", "AutoencoderRecipe.run.max_minutes (-1.0) must be >= 0"),
    ("run.eval_clips=-1", "AutoencoderRecipe.run.eval_clips (-1) must be >= 1"),
    ("data.fps=1e6", "AutoencoderRecipe.data.fps (1000000) must lie in (0, 1000]"),
    ("optim.warmup=5", "optim.warmup (5) must be <= optim.steps (4)"),
    ("data.n_fft=100", "data.n_fft (100)"),  # hop 200 > n_fft: the clip spec refuses it
])
def test_bad_values_are_refused_before_the_folder_exists(tmp_path, capsys, override, message):
    assert message in refusal(tmp_path, capsys, override)


def test_memory_heavy_values_are_refused_by_an_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AVBLOCKS_MEMORY_LIMIT", "1G")  # the same answer on every machine
    message = refusal(tmp_path, capsys, "run.eval_clips=100000")
    assert "run.eval_clips (each kept with its reconstruction): 200000 clip(s)" in message
    assert "more than the memory limit of 1.0 GB (AVBLOCKS_MEMORY_LIMIT=1G)" in message
    assert "one clip of data.num_frames (8) frames of data.size (10000) squared would need about 8.9 GB" in (
        refusal(tmp_path, capsys, "data.size=10000"))
    # one 3000-pixel clip (0.8 GB) fits, a batch of two does not
    assert "optim.batch_size: 2 clip(s) of data.num_frames (8) frames of data.size (3000)" in refusal(
        tmp_path, capsys, "data.size=3000")
    assert "training the model of model.*" in refusal(tmp_path, capsys, "model.hidden_channels=4096")


def test_every_broken_rule_is_listed_in_one_format():
    with pytest.raises(ConfigError) as info:
        load_config(AutoencoderRecipe, None, ["optim.lr=0", "model.video_patch=[1, 0, 4]", "loss.kl=-1"])
    assert str(info.value).split("; ") == [
        "AutoencoderRecipe.model.video_patch[1] (0) must be >= 1",
        "AutoencoderRecipe.loss.kl (-1.0) must lie in [0, 1000]",
        "AutoencoderRecipe.optim.lr (0.0) must lie in (0, 10]",
    ]


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("optim:\n  lr: [0.1, 0.2\n")
    with pytest.raises(ConfigError, match=rf'(?s){path} is not valid YAML.*in "{path}", line 2'):
        load_config(AutoencoderRecipe, path)


def test_grad_clip_zero_means_no_clipping(tmp_path):
    train_autoencoder.main([*TINY, "optim.steps=2", "optim.grad_clip=0", f"run.output_dir={tmp_path}"])
    losses = [json.loads(line)["total"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


# ---- the rules themselves ------------------------------------------------------------------


@dataclass
class Base:
    steps: Annotated[int, at_least(1), CHANGEABLE] = 10
    rate: Annotated[float, above(0)] = 0.5


@dataclass
class NewDefault(Base):
    rate: float = 2.0  # a new default keeps the parent's rule


@dataclass
class Loosened(Base):
    steps: Annotated[int, at_least(0)] = 0  # its own Annotated replaces the parent's rules


@dataclass
class Tree:
    base: NewDefault = field(default_factory=NewDefault)
    pair: Annotated[tuple[float, float] | None, in_range(0, 1)] = None


def test_rules_follow_subclasses_and_items():
    with pytest.raises(ConfigError, match=r"NewDefault.rate \(-1.0\) must be > 0"):
        config_from_dict(NewDefault, {"rate": -1})
    assert config_from_dict(Loosened, {}).steps == 0
    with pytest.raises(ConfigError, match=r"Tree.pair\[1\] \(1.5\) must lie in \[0, 1\]"):
        config_from_dict(Tree, {"pair": [0.5, 1.5]})
    assert config_from_dict(Tree, {"pair": None}).pair is None
    with pytest.raises(ConfigError, match=r"Tree.base.steps \(0\) must be >= 1"):
        check_fields(Tree(base=NewDefault(steps=0)))  # a config built in Python, checked alike
    assert is_changeable(Tree, "base.steps") and not is_changeable(Tree, "base.rate")
    assert not is_changeable(Loosened, "steps") and not is_changeable(Tree, "nothing.here")
    assert load_config(ReadRecipe, None, ["codec_optim.steps=0"]).codec_optim.steps == 0  # READ skips a stage


# ---- rerunning a folder with another config ------------------------------------------------


@pytest.fixture
def trained(tmp_path):
    out = tmp_path / "run"
    train_autoencoder.main([*TINY, f"run.output_dir={out}"])
    return out


def snapshot(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overrides, named", [
    (["model.hidden_channels=32"], "model.hidden_channels: 16 -> 32"),
    (["optim.lr=0.001", "data.seed=3"], "data.seed: 0 -> 3; optim.lr: 0.002 -> 0.001"),
    (["optim.steps=2"], "optim.steps (2) is fewer than the 4 steps the run's checkpoints"),
])
def test_a_rerun_that_would_change_the_run_is_refused_before_writing(trained, overrides, named):
    before = snapshot(trained)
    with pytest.raises(ConfigError, match="resuming it cannot change|is fewer than") as info:
        train_autoencoder.main([*TINY, *overrides, f"run.output_dir={trained}"])
    assert named in str(info.value)
    assert snapshot(trained) == before  # config.yaml, checkpoints and log untouched; no lock left


def test_a_rerun_may_extend_the_steps_and_change_logging(trained, capsys):
    train_autoencoder.main([*TINY, "optim.steps=6", "run.log_every=2", f"run.output_dir={trained}"])
    lines = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    change = [entry for entry in lines if "config_changed" in entry]
    assert change == [{"step": 4, "config_changed": {"optim.steps": [4, 6], "run.log_every": [1, 2]}}]
    assert [e["step"] for e in lines if "total" in e] == [0, 1, 2, 3, 4]  # then every 2nd step
    assert "optim.steps 4 -> 6" in capsys.readouterr().out
    assert load_config(AutoencoderRecipe, trained / "config.yaml").optim.steps == 6
    state = torch.load(trained / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert state["step"] == 6
