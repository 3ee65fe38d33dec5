"""Random values for every numeric config field of every trainer: each run is either refused
before its output folder exists, or trains its first step with a finite loss.

Hypothesis draws a field (walking the recipe's config dataclasses: ints, floats, exact rates,
tuples of ints, optional numbers) and a value for it (NaN, infinities, negative, zero, huge,
or small and plausible), puts it on a tiny config and runs the real entry point in-process.
The test-only fault ``stop_after@0`` (:mod:`recipes.common.faults`) stops the run after its
first step and hands back that step's loss, so an accepted value costs one step, not a run.
The ``ci`` profile draws a handful of values per trainer; ``AVBLOCKS_PROFILE=thorough`` or
``AVBLOCKS_FUZZ_EXAMPLES=N`` many more.

A second, exhaustive test gives every numeric field the values no field may take (NaN,
infinities, -2**40) and checks that each is refused by the field's own declared rule.
"""

import dataclasses
import itertools
import math
import os
import typing
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_runs import AUTOENCODER

from avblocks.config import ConfigError
from recipes.av_dit import pretrain as av_pretrain
from recipes.av_dit import train as av_train
from recipes.av_dit import train_autoencoder as av_autoencoder
from recipes.av_dit.config import AutoencoderRecipe as AVAutoencoderRecipe
from recipes.av_dit.config import AVDiTRecipe, CompareConfig, PretrainRecipe
from recipes.common.config import load_config
from recipes.common.faults import FAULTS_ENV, InjectedStop
from recipes.common.feature_net import FeatureRecipe
from recipes.common.sync_eval import SyncEvalConfig
from recipes.dual_stream import train as dual_train
from recipes.dual_stream.config import DualStreamRecipe
from recipes.features import train as features_train
from recipes.proav_dit import train_autoencoder, train_dit
from recipes.proav_dit.config import (
    AblationConfig,
    AutoencoderRecipe,
    DemoConfig,
    DemoRealConfig,
    DiTRecipe,
    EvaluateAutoencoderConfig,
)
from recipes.read_a2v import train as read_train
from recipes.read_a2v.config import EvaluateConfig, GenerateConfig, ReadRecipe

READ_CONFIG = Path(__file__).parents[1] / "recipes" / "read_a2v" / "configs" / "test.yaml"
DATA = ["data.num_clips=8", "data.num_frames=8", "data.size=16"]
PROAV_AE = [*AUTOENCODER, "optim.steps=2"]
PROAV_DIT = ["model.hidden_size=32", "model.depth=1", "model.num_heads=2", "optim.steps=2", "optim.warmup=1",
             "optim.batch_size=4", "run.progress=false"]
AV_AE = [*DATA[:1], "data.num_frames=4", "data.size=16", "audio_images=2", "model.hidden_channels=8",
         "model.depth=1", "model.groups=2", "optim.steps=2", "optim.batch_size=2", "optim.warmup=1",
         "run.eval_clips=2", "run.calibration_clips=2", "run.progress=false"]
AV_PRE = ["model.hidden_size=32", "model.depth=1", "model.num_heads=2", "optim.steps=2", "optim.batch_size=4",
          "optim.warmup=1", "run.progress=false"]
AV_ADAPTERS = ["optim.steps=2", "optim.batch_size=4", "optim.warmup=1", "run.progress=false",
               "model.lora_rank=2", "model.fusion_every=1"]
DUAL = ["data.num_clips=8", "data.num_frames=4", "data.size=16", "model.video_patch=8", "model.video_width=16",
        "model.audio_width=8", "model.depth=2", "model.num_heads=2", "model.coupling.heads=2", "optim.steps=2",
        "optim.batch_size=4", "optim.warmup=1", "run.progress=false", "sample.steps=2"]
FEATURES = ["model.num_frames=8", "model.size=16", "model.channels=[8, 8, 8]", "model.dim=16",
            "model.temporal_channels=16", "model.groups=4", "optim.batch_size=4", "optim.steps=2",
            "optim.warmup=1", "data.held_out_clips=4", "run.distances=false", "run.progress=false"]

NUMBER = (int, float, Fraction)


def numeric_fields(config_class: type, prefix: str = "") -> list[tuple[str, typing.Any]]:
    """``(dotted key, type hint)`` of every field holding numbers, nested configs walked."""
    found = []
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            found += numeric_fields(hint, f"{prefix}{f.name}.")
        elif any(t in NUMBER or typing.get_origin(t) is tuple and set(typing.get_args(t)) <= {int, Ellipsis}
                 for t in (hint, *typing.get_args(hint))):
            found.append((f"{prefix}{f.name}", hint))
    return found


def yaml_text(value) -> str:
    if isinstance(value, float):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") if math.isinf(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    return "null" if value is None else str(value)


INTS = st.one_of(st.sampled_from([-2**40, -1, 0, 2**40]), st.integers(1, 8))
FLOATS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300]),
                   st.floats(0, 4, allow_nan=False))
RATES = st.sampled_from(["0", "-8", "1e6", "4", "16", "30000/1001", "1/1000"])


def values(hint, default) -> st.SearchStrategy:
    """Values for a field of type ``hint`` (shaped like its ``default`` where it is a tuple)."""
    options = [t for t in (hint, *typing.get_args(hint)) if t is not type(None)]
    strategies = []
    if int in options:
        strategies.append(INTS)
    if float in options:
        strategies.append(FLOATS)
    if Fraction in options:
        strategies.append(RATES)
    if any(typing.get_origin(t) is tuple for t in options):
        size = len(default) if isinstance(default, tuple) else 2
        strategies.append(st.lists(INTS, min_size=size, max_size=size))
    if type(None) in typing.get_args(hint):
        strategies.append(st.none())
    return st.one_of(strategies)


def lookup(config, key: str):
    for part in key.split("."):
        config = getattr(config, part)
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The earlier stages the DiT trainers need, trained once, and a folder for the runs."""
    base = tmp_path_factory.mktemp("fuzz")
    train_autoencoder.main([*PROAV_AE, f"run.output_dir={base / 'proav_ae'}"])
    av_autoencoder.main([*AV_AE, f"run.output_dir={base / 'av_ae'}"])
    av_pretrain.main([*AV_PRE, f"autoencoder={base / 'av_ae'}", f"run.output_dir={base / 'av_pre'}"])
    return {"base": base, "proav_ae": base / "proav_ae", "av_ae": base / "av_ae", "av_pre": base / "av_pre"}


def trainers(runs: dict[str, Path]) -> dict[str, tuple]:
    """``name: (config class, main, base arguments, the run folder's key)``."""
    return {
        "proav_autoencoder": (AutoencoderRecipe, train_autoencoder.main, PROAV_AE, "run.output_dir"),
        "proav_dit": (DiTRecipe, train_dit.main, [*PROAV_DIT, f"autoencoder={runs['proav_ae']}"], "run.output_dir"),
        "read": (ReadRecipe, read_train.main, ["--config", str(READ_CONFIG)], "run.output_dir"),
        "features": (FeatureRecipe, features_train.main, FEATURES, "run.output_dir"),
        "av_autoencoder": (AVAutoencoderRecipe, av_autoencoder.main, AV_AE, "run.output_dir"),
        "av_pretrain": (PretrainRecipe, av_pretrain.main, [*AV_PRE, f"autoencoder={runs['av_ae']}"],
                        "run.output_dir"),
        "dual_stream": (DualStreamRecipe, dual_train.main, DUAL, "run.output_dir"),
        "av_adapters": (AVDiTRecipe, av_train.main, [*AV_ADAPTERS, f"autoencoder={runs['av_ae']}",
                                                     f"pretrained={runs['av_pre']}"], "run.output_dir"),
    }


_counter = itertools.count()


def run_once(runs: dict[str, Path], name: str, key: str, value) -> str:
    """Run trainer ``name`` with ``key=value``; the outcome, checked against the property."""
    config_class, main, base, out_key = trainers(runs)[name]
    override = f"{key}={yaml_text(value)}"
    extra = []
    if name == "read":  # the codec stage trains first: skip it unless the value is one of its own
        extra = ["codec_optim.steps=1"] if key.startswith("codec") else ["codec_optim.steps=0"]
    out = runs["base"] / f"{name}_{next(_counter)}"
    previous = os.environ.get(FAULTS_ENV)
    os.environ[FAULTS_ENV] = "stop_after@0"
    try:
        main([*base, *extra, override, f"{out_key}={out}"])
    except (SystemExit, ConfigError) as refused:
        assert not out.exists(), f"{override} was refused after {out} was made: {refused}"
        return "refused"
    except InjectedStop as stop:
        assert math.isfinite(stop.loss), f"{override}: the first step's loss is {stop.loss}"
        return "trained"
    finally:
        if previous is None:
            del os.environ[FAULTS_ENV]
        else:
            os.environ[FAULTS_ENV] = previous
    return "finished"  # a stage of zero steps: nothing to train, and nothing failed


# per trainer: a handful in the ci profile; AVBLOCKS_FUZZ_EXAMPLES=50 for a longer search
EXAMPLES = int(os.environ.get("AVBLOCKS_FUZZ_EXAMPLES", max(3, settings().max_examples // 3)))


@pytest.mark.parametrize("name", ["proav_autoencoder", "proav_dit", "read", "features", "av_autoencoder",
                                  "av_pretrain", "av_adapters", "dual_stream"])
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_a_random_value_is_refused_before_the_folder_exists_or_trains_a_finite_step(runs, name, data):
    config_class, _, base, _ = trainers(runs)[name]
    defaults = config_class()
    key, hint = data.draw(st.sampled_from(numeric_fields(config_class)), label="field")
    value = data.draw(values(hint, lookup(defaults, key)), label="value")
    assert run_once(runs, name, key, value) in ("refused", "trained", "finished")


# values that once got past the checks (found by the search above: allocating terabytes, a NaN
# first loss, a sampler error after the folder existed); each must now be refused
FOUND = [
    ("av_autoencoder", "optim.batch_size", 2**40),
    ("av_pretrain", "optim.batch_size", 9),
    ("av_adapters", "diffusion.num_timesteps", 2**40),
    ("av_adapters", "model.bottleneck", 2**40),
    ("av_adapters", "model.lora_rank", 2**40),
    ("av_adapters", "model.lora_alpha", 1e300),
    ("proav_autoencoder", "optim.lr", 1e300),
    ("features", "optim.batch_size", 2**40),
]


@pytest.mark.parametrize("name, key, value", FOUND, ids=[f"{n}-{k}" for n, k, _ in FOUND])
def test_values_the_search_found_are_refused(runs, name, key, value):
    assert run_once(runs, name, key, value) == "refused"


CONFIGS = [AutoencoderRecipe, DiTRecipe, EvaluateAutoencoderConfig, AblationConfig, DemoConfig, DemoRealConfig,
           AVAutoencoderRecipe, PretrainRecipe, AVDiTRecipe, CompareConfig, ReadRecipe, GenerateConfig,
           EvaluateConfig, FeatureRecipe, DualStreamRecipe, SyncEvalConfig]
REQUIRED = {GenerateConfig: ["run_dir=x"], EvaluateConfig: ["run_dir=x"], SyncEvalConfig: ["run_dir=x"]}


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: f"{c.__module__.split('.')[1]}.{c.__name__}")
def test_every_numeric_field_declares_its_range(config_class):
    """No field takes NaN, an infinity or a huge negative number: each is refused by the rule
    declared on the field itself, with the field's name in the message."""
    for key, hint in numeric_fields(config_class):
        options = (hint, *typing.get_args(hint))
        bad = [-2**40]
        if float in options or Fraction in options:
            bad += [math.nan, math.inf, -math.inf]
        for value in bad:
            if not (int in options or float in options or Fraction in options):  # a tuple field
                value = [value, value]
            with pytest.raises(ConfigError, match=rf"{config_class.__name__}\.{key}\b"):
                load_config(config_class, None, [*REQUIRED.get(config_class, []), f"{key}={yaml_text(value)}"])
