"""Save/load convention: config.json + model.safetensors, strict, validated, atomic."""

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from avblocks import saveload as saveload_mod
from avblocks.config import ConfigError, config_from_dict, config_to_dict
from avblocks.saveload import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, SaveLoadMixin


@dataclass
class InnerConfig:
    scale: float = 1.0


@dataclass
class TinyConfig:
    channels: int = 4
    patch: tuple[int, int, int] = (1, 2, 2)
    act: Literal["silu", "gelu"] = "silu"
    bias: bool = True
    name: str | None = None
    inner: InnerConfig | None = None


class Tiny(SaveLoadMixin, nn.Module):
    config_class = TinyConfig

    def __init__(
        self,
        *,
        channels: int = 4,
        patch: tuple[int, int, int] = (1, 2, 2),
        act: Literal["silu", "gelu"] = "silu",
        bias: bool = True,
        name: str | None = None,
        inner: InnerConfig | None = None,  # None is allowed by the config type too
    ):
        super().__init__()
        self.proj = nn.Conv3d(3, channels, kernel_size=patch, stride=patch, bias=bias)
        self.norm = nn.GroupNorm(1, channels)
        self.register_buffer("running", torch.arange(channels, dtype=torch.float32))


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_round_trip_exact_weights_and_config(tmp_path):
    m = Tiny(channels=6, patch=(2, 1, 3), act="gelu", name="x")
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    m.running.mul_(3.5)
    m.save_pretrained(tmp_path / "ckpt")
    assert _files(tmp_path / "ckpt") == [CONFIG_NAME, WEIGHTS_NAME]  # no temp files left
    loaded = Tiny.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == m.config
    assert loaded.config.patch == (2, 1, 3) and isinstance(loaded.config.patch, tuple)
    sd, sd2 = m.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    x = torch.randn(1, 3, 4, 4, 6)
    assert torch.equal(m.proj(x), loaded.proj(x))
    payload = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    assert payload["class"] == "Tiny"
    assert payload["config"]["patch"] == [2, 1, 3]
    assert payload["config"]["inner"] is None


def test_config_recorded_with_defaults_and_from_config():
    m = Tiny(channels=8)
    assert m.config == TinyConfig(channels=8)
    m2 = Tiny.from_config(TinyConfig(channels=2, bias=False))
    assert m2.proj.bias is None and m2.config.channels == 2
    m3 = Tiny.from_config({"channels": 3, "patch": [1, 1, 1]})
    assert m3.config.patch == (1, 1, 1) and m3.proj.out_channels == 3


def test_from_dict_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'chanels'"):
        config_from_dict(TinyConfig, {"chanels": 4})
    with pytest.raises(ConfigError, match="'depth'"):
        Tiny.from_config({"depth": 2})


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"channels": 4.5}, r"TinyConfig\.channels: expected int"),
        ({"channels": True}, r"TinyConfig\.channels: expected int"),
        ({"patch": [1, 2]}, r"TinyConfig\.patch: .*3 items"),
        ({"patch": [1, 2, "a"]}, r"TinyConfig\.patch\[2\]: expected int"),
        ({"act": "relu"}, r"TinyConfig\.act: 'relu' is not one of"),
        ({"bias": 1}, r"TinyConfig\.bias: expected bool"),
        ({"inner": {"scale": "big"}}, r"TinyConfig\.inner\.scale: expected float"),
        ({"inner": {"scael": 1.0}}, r"TinyConfig\.inner: unknown key\(s\) 'scael'"),
    ],
)
def test_from_dict_wrong_types_are_named(data, needle):
    with pytest.raises(ConfigError, match=needle):
        config_from_dict(TinyConfig, data)


def test_from_dict_missing_required_key_named():
    @dataclass
    class Req:
        size: int

    with pytest.raises(ConfigError, match="missing required key.*'size'"):
        config_from_dict(Req, {})


def test_config_dict_round_trip_and_int_as_float():
    cfg = config_from_dict(TinyConfig, {"inner": {"scale": 2}, "name": None})
    assert isinstance(cfg.inner, InnerConfig)
    assert cfg.inner.scale == 2.0 and isinstance(cfg.inner.scale, float)
    assert config_from_dict(TinyConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_from_config_validates_python_built_config():
    with pytest.raises(ConfigError, match=r"TinyConfig\.channels"):
        Tiny.from_config(TinyConfig(channels="4"))  # type: ignore[arg-type]


def test_signature_must_match_config():
    with pytest.raises(TypeError, match=r"only in __init__ \['extra'\]"):

        class Bad(SaveLoadMixin, nn.Module):  # noqa: F841
            config_class = TinyConfig

            def __init__(self, *, channels=4, patch=(1, 2, 2), act="silu", bias=True,
                         name=None, inner=None, extra=0):
                super().__init__()

    with pytest.raises(TypeError, match="keyword-only"):

        class Positional(SaveLoadMixin, nn.Module):  # noqa: F841
            config_class = InnerConfig

            def __init__(self, scale=1.0):
                super().__init__()


def _tamper(path, fn):
    """Rewrite the weights with ``fn`` applied, as a consistent save would (the config records
    the new file's SHA-256), so that what is checked is the loader's strictness."""
    sd = load_file(str(path))
    fn(sd)
    config = json.loads((path.parent / CONFIG_NAME).read_text())
    save_file(sd, str(path), metadata={"save_id": config["save_id"]})
    config["sha256"] = {WEIGHTS_NAME: hashlib.sha256(path.read_bytes()).hexdigest()}
    (path.parent / CONFIG_NAME).write_text(json.dumps(config))


def test_missing_unexpected_and_shape_mismatch_are_named(tmp_path):
    Tiny(channels=4).save_pretrained(tmp_path)
    w = tmp_path / WEIGHTS_NAME
    _tamper(w, lambda sd: sd.pop("norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \['norm.weight'\]"):
        Tiny.from_pretrained(tmp_path)

    Tiny(channels=4).save_pretrained(tmp_path)
    _tamper(w, lambda sd: sd.__setitem__("extra.bias", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['extra.bias'\]"):
        Tiny.from_pretrained(tmp_path)

    Tiny(channels=4).save_pretrained(tmp_path)
    _tamper(w, lambda sd: sd.__setitem__("norm.bias", torch.zeros(5)))
    with pytest.raises(CheckpointError, match=r"norm.bias: saved \(5,\) vs module \(4,\)"):
        Tiny.from_pretrained(tmp_path)


def test_wrong_class_and_missing_files(tmp_path):
    class Other(SaveLoadMixin, nn.Module):
        config_class = InnerConfig

        def __init__(self, *, scale: float = 1.0):
            super().__init__()

    Other().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="saved from Other, cannot load it as Tiny"):
        Tiny.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        Tiny.from_pretrained(tmp_path / "nowhere")


def _saved_state(tmp_path):
    old = Tiny(channels=4)
    with torch.no_grad():
        old.proj.weight.fill_(1.25)
    old.save_pretrained(tmp_path)
    return old


def _assert_old_intact(tmp_path, old):
    assert _files(tmp_path) == [CONFIG_NAME, WEIGHTS_NAME]  # temp files were cleaned up
    again = Tiny.from_pretrained(tmp_path)
    assert again.config == old.config
    assert torch.equal(again.proj.weight, old.proj.weight)


def test_crash_in_writer_leaves_previous_save_intact(tmp_path, monkeypatch):
    old = _saved_state(tmp_path)

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(saveload_mod, "save_file", boom)
    with pytest.raises(OSError, match="simulated"):
        Tiny(channels=8).save_pretrained(tmp_path)
    _assert_old_intact(tmp_path, old)


def test_crash_at_first_replace_leaves_previous_save_intact(tmp_path, monkeypatch):
    old = _saved_state(tmp_path)

    def boom(src, dst):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(saveload_mod.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        Tiny(channels=8).save_pretrained(tmp_path)
    monkeypatch.undo()
    _assert_old_intact(tmp_path, old)


def test_crash_between_replaces_is_detected_not_loaded(tmp_path, monkeypatch):
    _saved_state(tmp_path)
    real_replace = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("power cut (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(saveload_mod.os, "replace", second_fails)
    with pytest.raises(OSError, match="simulated"):
        Tiny(channels=4).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert _files(tmp_path) == [CONFIG_NAME, WEIGHTS_NAME]
    with pytest.raises(CheckpointError, match="different saves"):
        Tiny.from_pretrained(tmp_path)


def test_from_pretrained_device_and_dtype(tmp_path):
    Tiny().save_pretrained(tmp_path)
    m = Tiny.from_pretrained(tmp_path, dtype=torch.float64)
    assert m.proj.weight.dtype == torch.float64
