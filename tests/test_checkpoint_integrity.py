"""Checkpoints that prove themselves: damaged ones are reported and skipped, flipped bytes caught.

Before: a truncated newest checkpoint gave PyTorch's "failed finding central directory" and a
0-byte one a bare ``EOFError`` (neither named the file) although the previous checkpoint was
intact; 4 flipped bytes in a ``model.safetensors`` loaded with one weight changed, and in a
training checkpoint a resumed run finished with rc 0 on an optimizer moment off by 44,468.
The trainer tests run the real entry point in a subprocess.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_runs import AUTOENCODER

from avblocks.latent.mdsa import MDSA
from avblocks.saveload import CheckpointError
from recipes.common.checkpoint import CheckpointManager
from recipes.common.distributed import DistContext, TrainCheckpoints, save_sharded, verify_sharded
from recipes.proav_dit import train_autoencoder

ROOT = Path(__file__).resolve().parents[1]
TINY = [*AUTOENCODER, "optim.steps=6", "run.checkpoint_every=2"]


def flip(path: Path, offset: int, count: int = 4) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def final(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "step_00000006.pt", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    train_autoencoder.main([*TINY, f"run.output_dir={out}"])
    return out


def rerun(out: Path) -> subprocess.CompletedProcess:
    """The same command again, as a user would run it: a real process."""
    return subprocess.run([sys.executable, "-m", "recipes.proav_dit.train_autoencoder", *TINY,
                           f"run.output_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


def copy_run(source: Path, dest: Path) -> Path:
    shutil.copytree(source / "checkpoints", dest / "checkpoints")
    shutil.copy(source / "config.yaml", dest / "config.yaml")
    return dest


def test_damaged_newest_checkpoints_are_reported_and_the_newest_intact_one_resumes(tmp_path, uninterrupted):
    out = copy_run(uninterrupted, tmp_path / "run")
    ckpt = out / "checkpoints"
    newest = ckpt / "step_00000006.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a truncated copy
    (ckpt / "step_00000004.pt").write_bytes(b"")  # and an empty one
    done = rerun(out)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("step_00000006.pt", "step_00000004.pt"):
        assert f"checkpoint {name} is damaged and was set aside as {name}.damaged" in done.stdout
        assert (ckpt / f"{name}.damaged").is_file()
    assert f"{ckpt / 'step_00000006.pt'} is damaged: its SHA-256 is" in done.stdout
    assert "resuming from step 2" in done.stdout
    # the replay from step 2 is exact: the run ends where the undisturbed one ended
    got, reference = final(out), final(uninterrupted)
    assert same_state(got["model"], reference["model"])
    assert same_state(got["ema"]["shadow"], reference["ema"]["shadow"])


def test_flipped_bytes_in_a_training_checkpoint_are_caught_not_resumed(tmp_path, uninterrupted):
    out = copy_run(uninterrupted, tmp_path / "run")
    newest = out / "checkpoints" / "step_00000006.pt"
    state = torch.load(newest, weights_only=True)
    flip(newest, newest.stat().st_size // 2)  # the middle of the file: tensor data
    assert torch.load(newest, weights_only=True).keys() == state.keys()  # PyTorch alone loads it
    done = rerun(out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step_00000006.pt is damaged: its SHA-256 is" in done.stdout
    assert "resuming from step 4" in done.stdout
    assert same_state(final(out)["optimizer"]["state"][0], final(uninterrupted)["optimizer"]["state"][0])


def test_when_no_checkpoint_is_intact_the_error_names_every_file(tmp_path):
    manager = CheckpointManager(tmp_path)
    for step in (2, 4):
        manager.save(step, {"model": {"w": torch.ones(3)}})
    (tmp_path / "step_00000002.pt").write_bytes(b"")
    flip(tmp_path / "step_00000004.pt", 100)
    with pytest.raises(CheckpointError) as info:
        manager.load_latest()
    message = str(info.value)
    assert f"no intact checkpoint in {tmp_path}" in message
    assert f"{tmp_path / 'step_00000004.pt'} is damaged: its SHA-256" in message
    assert f"{tmp_path / 'step_00000002.pt'} is damaged: its SHA-256" in message


def test_a_checkpoint_without_its_record_loads_with_a_warning_and_read_errors_name_the_file(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(2, {"model": {"w": torch.ones(3)}})
    (tmp_path / "step_00000002.pt.sha256").unlink()  # as written before records existed
    with pytest.warns(UserWarning, match="has no SHA-256 record"):
        assert torch.equal(manager.load_latest()["model"]["w"], torch.ones(3))
    (tmp_path / "step_00000002.pt").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=rf"{tmp_path / 'step_00000002.pt'} "
                                                                        r"cannot be read \(EOFError"):
        manager.load_latest()


def tiny_mdsa() -> MDSA:
    return MDSA(hidden_channels=16, latent_channels=2, depth=1, heads=2, groups=2)


@pytest.mark.parametrize("where", ["data", "header", "config"])
def test_flipped_bytes_in_a_saved_model_folder_are_named(tmp_path, where):
    model = tiny_mdsa()
    model.save_pretrained(tmp_path)
    weights, config = tmp_path / "model.safetensors", tmp_path / "config.json"
    if where == "data":
        flip(weights, weights.stat().st_size - 64)
        match = rf"{weights} is damaged: its SHA-256 is \w+, {config} records"
    elif where == "header":
        flip(weights, 20)
        match = rf"{weights} is damaged: its SHA-256 is"
    else:  # a digit of the config changed by hand or by the disk
        config.write_text(config.read_text().replace('"hidden_channels": 16', '"hidden_channels": 17'))
        match = rf"{config} is damaged: its config's SHA-256 is"
    with pytest.raises(CheckpointError, match=match):
        MDSA.from_pretrained(tmp_path)


def test_a_truncated_model_folder_names_the_file(tmp_path):
    tiny_mdsa().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"sha256"', '"unchecked"'))  # an older folder
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"{weights} cannot be read"):
        MDSA.from_pretrained(tmp_path)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_sharded_checkpoints_record_every_file_and_restore_skips_a_damaged_one(tmp_path, capsys):
    store = TrainCheckpoints(tmp_path, keep=3, ctx=DistContext(), sharded=True)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    parts = {"model": model, "optimizer": opt}
    for step in (2, 4):
        with torch.no_grad():
            model.weight.fill_(step)
        store.save(step, parts)
    newest = tmp_path / "step_00000004.dcp"
    assert verify_sharded(newest) == newest
    shard = next(p for p in newest.iterdir() if p.suffix == ".distcp")
    flip(shard, shard.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=rf"{shard} is damaged: its SHA-256"):
        verify_sharded(newest)
    assert store.restore(parts) == 2 and torch.all(model.weight == 2)
    assert "step_00000004.dcp is damaged and was set aside" in capsys.readouterr().out
    assert (tmp_path / "step_00000004.dcp.damaged").is_dir()
    save_sharded(tmp_path, 6, {"model": model.state_dict()}, keep=3)  # pruning never sees it
    assert (tmp_path / "step_00000004.dcp.damaged").is_dir()
