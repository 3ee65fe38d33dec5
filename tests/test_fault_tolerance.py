"""Crashes and bad numbers: real SIGKILLs of the trainer, kills inside a save, NaN policies.

The trainer is the real entry point (``python -m recipes.proav_dit.train_autoencoder``) on the
tiny config of tests/test_recipe_autoencoder.py. Faults other than kills come from the
test-only ``AVBLOCKS_FAULTS`` hooks of :mod:`recipes.common.faults`.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_runs import AUTOENCODER

from recipes.common.faults import (
    FaultInjection,
    NonFiniteError,
    NonFiniteGuard,
    find_non_finite,
    remove_stale_temporaries,
)
from recipes.proav_dit import train_autoencoder

ROOT = Path(__file__).resolve().parents[1]
TINY = [*AUTOENCODER, "optim.steps=6", "run.checkpoint_every=2"]
STEPS = 6


def env(**extra: str) -> dict[str, str]:
    # one thread, as in this test process (conftest), so every run does the same arithmetic
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "recipes.proav_dit.train_autoencoder",
            *TINY, f"run.output_dir={out}", *extra]


def run_inprocess(out: Path, *extra: str) -> dict:
    return train_autoencoder.main([*TINY, f"run.output_dir={out}", *extra])


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def by_step(out: Path) -> dict[int, list[dict]]:
    steps: dict[int, list[dict]] = {}
    for entry in log_lines(out):
        steps.setdefault(entry["step"], []).append(entry)
    return steps


def final_model(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / f"step_{STEPS:08d}.pt", weights_only=True)["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) before the kill point:\n"
                                 f"{proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the kill point")
        time.sleep(0.005)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_inprocess(out)
    return out


def test_sigkill_at_a_random_step_then_resume_gives_the_same_losses(tmp_path, uninterrupted):
    kill_after = random.Random(os.environ.get("AVBLOCKS_KILL_SEED", "9")).randint(1, STEPS - 2)
    proc = subprocess.Popen(command(tmp_path), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    log = tmp_path / "log.jsonl"
    wait_for(lambda: log.is_file() and len(log.read_text().splitlines()) >= kill_after, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    logged_before = len(log_lines(tmp_path))
    assert logged_before < STEPS  # it really died mid-run
    assert not (tmp_path / "model").exists()
    run_inprocess(tmp_path)  # the same command again resumes
    reference, got = by_step(uninterrupted), by_step(tmp_path)
    assert sorted(got) == list(range(STEPS))
    for step, entries in got.items():  # replayed steps are logged twice: both must match
        assert all(e == reference[step][0] for e in entries), step
    assert same_weights(final_model(tmp_path), final_model(uninterrupted))


def test_kill_inside_a_save_leaves_the_previous_checkpoint_intact(tmp_path, uninterrupted):
    ckpt = tmp_path / "checkpoints"
    proc = subprocess.Popen(command(tmp_path), env=env(AVBLOCKS_FAULTS="pad_checkpoint_mb=300"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = ckpt / "step_00000002.pt"
    wait_for(first.is_file, proc)
    wait_for(lambda: any(p.name.startswith(".step_00000004.") for p in ckpt.iterdir()), proc)
    proc.send_signal(signal.SIGKILL)  # torch.save is writing the 300 MB step-4 file
    proc.wait()
    leftovers = [p for p in ckpt.iterdir() if p.name.startswith(".step_00000004.")]
    assert leftovers and leftovers[0].stat().st_size < 300 * 2**20  # killed mid-write
    assert sorted(p.name for p in ckpt.glob("step_*.pt")) == ["step_00000002.pt"]
    # the previous checkpoint is whole: it loads, and holds what an undisturbed run saved
    state = torch.load(first, weights_only=True)
    reference = torch.load(uninterrupted / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert state["step"] == 2 and same_weights(state["model"], reference["model"])
    assert state["_injected_padding"].numel() == 300 * 2**20 // 4
    run_inprocess(tmp_path)  # resumes from step 2, removes the torn temporary
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]
    assert same_weights(final_model(tmp_path), final_model(uninterrupted))


def test_nonfinite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("AVBLOCKS_FAULTS", "nan_loss@3")
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(nan\) at step 3.*on_nonfinite"):
        run_inprocess(tmp_path)
    assert [e["step"] for e in log_lines(tmp_path)] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["step_00000002.pt"]


@pytest.fixture(scope="module")
def skipped_step3(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("skip")
    os.environ["AVBLOCKS_FAULTS"] = "nan_loss@3"
    try:
        metrics = run_inprocess(out, "run.on_nonfinite=skip")
    finally:
        del os.environ["AVBLOCKS_FAULTS"]
    assert metrics["nonfinite_events"] == [{"step": 3, "skipped": "loss (nan)"}]
    return out


def test_skip_policy_skips_only_the_bad_step(skipped_step3, uninterrupted):
    got, reference = by_step(skipped_step3), by_step(uninterrupted)
    assert got[3] == [{"step": 3, "skipped": "loss (nan)"}]
    assert got[0] == reference[0] and got[2] == reference[2]
    assert got[4] != reference[4]  # the skipped update changes what follows
    assert find_non_finite(final_model(skipped_step3)) is None
    # nothing of step 3 was applied: the optimizer made STEPS - 1 updates
    state = torch.load(skipped_step3 / "checkpoints" / f"step_{STEPS:08d}.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == STEPS  # the schedule still follows the step
    assert all(float(s["step"]) == STEPS - 1 for s in state["optimizer"]["state"].values())


def test_rollback_replays_from_the_checkpoint_and_skips_the_bad_step(tmp_path, monkeypatch,
                                                                    skipped_step3):
    monkeypatch.setenv("AVBLOCKS_FAULTS", "nan_loss@3")
    metrics = run_inprocess(tmp_path, "run.on_nonfinite=rollback")
    assert metrics["nonfinite_events"] == [{"step": 3, "rolled_back": "loss (nan)"}]
    steps = [e["step"] for e in log_lines(tmp_path)]
    assert steps == [0, 1, 2, 3, 2, 3, 4, 5]  # 3 failed, back to the step-2 checkpoint, replay
    assert log_lines(tmp_path)[3] == {"step": 3, "rolled_back_to": 2, "reason": "loss (nan)"}
    # an exact replay that skips step 3 ends exactly where skipping step 3 ends
    assert same_weights(final_model(tmp_path), final_model(skipped_step3))


def test_rollback_gives_up_after_max_rollbacks(tmp_path, monkeypatch):
    monkeypatch.setenv("AVBLOCKS_FAULTS", "nan_loss@3")
    with pytest.raises(NonFiniteError, match=r"after 0 rollback\(s\) \(run.max_rollbacks=0\)"):
        run_inprocess(tmp_path, "run.on_nonfinite=rollback", "run.max_rollbacks=0")


def test_checkpoint_with_nonfinite_weights_is_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("AVBLOCKS_FAULTS", "nan_weights@1")  # weights go bad before the step-2 save
    with pytest.raises(NonFiniteError, match=r"weights \(model\..*\); checkpoint step 2 not written"):
        run_inprocess(tmp_path)
    assert not list((tmp_path / "checkpoints").glob("*"))
    with pytest.raises(NonFiniteError, match="skipping cannot undo"):
        run_inprocess(tmp_path, "run.on_nonfinite=skip")
    with pytest.raises(NonFiniteError, match="no checkpoint to roll back to"):
        run_inprocess(tmp_path, "run.on_nonfinite=rollback")
    assert not list((tmp_path / "checkpoints").glob("*"))


def test_bad_weights_roll_back_to_the_last_good_checkpoint(tmp_path, monkeypatch, skipped_step3):
    monkeypatch.setenv("AVBLOCKS_FAULTS", "nan_weights@3")  # caught at the step-4 save
    metrics = run_inprocess(tmp_path, "run.on_nonfinite=rollback")
    assert metrics["nonfinite_events"][0]["step"] == 3
    for path in (tmp_path / "checkpoints").glob("step_*.pt"):
        assert find_non_finite(torch.load(path, weights_only=True)["model"]) is None
    # rolled back to step 2, replayed, and step 3's (poisoned) update was skipped
    assert same_weights(final_model(tmp_path), final_model(skipped_step3))


def test_stale_temporaries_are_the_only_files_removed(tmp_path):
    keep = [tmp_path / "step_00000002.pt", tmp_path / ".hidden_user_file", tmp_path / "notes.tmp.pt"]
    for path in keep:
        path.write_text("x")
    torn = [tmp_path / ".step_00000004.0123456789ab.tmp.pt", tmp_path / ".step_00000006.tmp"]
    torn[0].write_text("half")
    torn[1].mkdir()
    (torn[1] / "__0_0.distcp").write_text("half")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(torn)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in torn)


def test_fault_spec_and_guard_validation():
    faults = FaultInjection.from_env({"AVBLOCKS_FAULTS": "nan_loss@1,4; pad_checkpoint_mb=2"})
    assert faults.nan_loss_steps == {1, 4} and faults.pad_checkpoint_mb == 2.0
    assert FaultInjection.from_env({}).loss(1, torch.tensor(2.0)).item() == 2.0
    with pytest.raises(ValueError, match="unknown fault"):
        FaultInjection.from_env({"AVBLOCKS_FAULTS": "explode@3"})
    with pytest.raises(ValueError, match="on_nonfinite"):
        NonFiniteGuard("ignore")  # type: ignore[arg-type]
    with pytest.raises(SystemExit):
        train_autoencoder.main([*TINY, "run.on_nonfinite=ignore"])


def test_dit_trainer_rollback_equals_skip_and_stop_names_the_step(tmp_path, monkeypatch):
    from recipes.proav_dit import train_dit

    ae = tmp_path / "ae"
    train_autoencoder.main([*TINY, "optim.steps=2", f"run.output_dir={ae}"])  # later keys win
    dit = ["model.hidden_size=32", "model.depth=1", "model.num_heads=2", "optim.steps=6",
           "optim.batch_size=4", "optim.warmup=1", "run.checkpoint_every=2", "run.log_every=1",
           "run.progress=false", f"autoencoder={ae}"]
    monkeypatch.setenv("AVBLOCKS_FAULTS", "nan_loss@3")
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(nan\) at step 3"):
        train_dit.main([*dit, f"run.output_dir={tmp_path / 'stop'}"])
    skip = train_dit.main([*dit, "run.on_nonfinite=skip", f"run.output_dir={tmp_path / 'skip'}"])
    roll = train_dit.main([*dit, "run.on_nonfinite=rollback", f"run.output_dir={tmp_path / 'roll'}"])
    assert skip["nonfinite_events"] == [{"step": 3, "skipped": "loss (nan)"}]
    assert roll["nonfinite_events"] == [{"step": 3, "rolled_back": "loss (nan)"}]
    a = torch.load(tmp_path / "skip" / "checkpoints" / "step_00000006.pt", weights_only=True)
    b = torch.load(tmp_path / "roll" / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert same_weights(a["model"], b["model"]) and same_weights(a["ema"]["shadow"], b["ema"]["shadow"])
