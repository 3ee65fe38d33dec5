"""One writer per run folder: the lock, its refusal, its takeover, and two real trainers.

Before the lock, a second trainer started on a folder while the first was writing a
checkpoint deleted the first's temporary file as "left by an interrupted save" (the first then
crashed), and two trainers with different learning rates both exited 0 with one
``config.yaml``, the other's checkpoints and an interleaved ``log.jsonl``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tiny_runs import AUTOENCODER

from recipes.common import run_lock
from recipes.common.run_lock import LOCK_NAME, RunFolderLocked

ROOT = Path(__file__).resolve().parents[1]
TINY = AUTOENCODER


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def holder(folder: Path) -> subprocess.Popen:
    """Another process that takes ``folder``'s lock and keeps it until killed."""
    code = textwrap.dedent(f"""
        import time
        from recipes.common.run_lock import hold
        hold({str(folder)!r})
        print("held", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env(), cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout.readline().decode().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    proc = holder(tmp_path)
    try:
        with pytest.raises(RunFolderLocked, match=rf"in use by another run \(pid {proc.pid} on host "
                                                  rf"'{socket.gethostname()}', started"):
            run_lock.hold(tmp_path)
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_holders_lock_is_taken_over_with_a_message(tmp_path, capsys):
    proc = holder(tmp_path)
    proc.send_signal(signal.SIGKILL)  # dies without releasing: the record stays
    proc.wait()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == proc.pid
    lock = run_lock.hold(tmp_path)
    try:
        printed = capsys.readouterr().out
        assert f"its holder (pid {proc.pid} on host" in printed and "is no longer running" in printed
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert run_lock.hold(tmp_path) is lock  # this process holds it already
    finally:
        run_lock.release(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()  # released: the file goes


def test_a_lock_recorded_on_another_host_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "then"}))
    with pytest.raises(RunFolderLocked, match="records a run on another host .*'elsewhere'"):
        run_lock.hold(tmp_path)


def test_only_the_holder_removes_temporaries(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    torn = checkpoints / ".step_00000004.0123456789ab.tmp.pt"
    torn.write_text("half")
    with pytest.raises(RunFolderLocked, match="only the holder"):
        run_lock.remove_leftovers(checkpoints)
    assert torn.exists()
    run_lock.hold(tmp_path)
    try:
        assert run_lock.remove_leftovers(checkpoints) == [torn] and not torn.exists()
    finally:
        run_lock.release(tmp_path)


def trainer(out: Path, *extra: str, faults: str = "") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recipes.proav_dit.train_autoencoder", *TINY,
                             f"run.output_dir={out}", *extra], env=env(AVBLOCKS_FAULTS=faults), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


STEPS = 100


def test_two_trainers_on_one_folder_the_second_is_refused_and_the_first_finishes(tmp_path):
    # the first saves a padded checkpoint every 5 steps, the second starts while it trains
    common = [f"optim.steps={STEPS}", "run.checkpoint_every=5", "run.keep_checkpoints=1"]
    first = trainer(tmp_path, *common, "optim.lr=0.002", faults="pad_checkpoint_mb=20")
    checkpoints = tmp_path / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints.is_dir() and any(checkpoints.iterdir())):  # it holds the folder and saves
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the first trainer never saved"
        time.sleep(0.01)
    second = trainer(tmp_path, *common, "optim.lr=0.5")
    _, err = second.communicate(timeout=300)
    assert first.poll() is None, "the first run ended before the second was refused: make it longer"
    assert second.returncode != 0
    assert f"is in use by another run (pid {first.pid} on host" in err.decode()
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err.decode()[-2000:]  # no temporary of its saves was touched
    # one run's config, checkpoints and log: the first's
    assert "lr: 0.002" in (tmp_path / "config.yaml").read_text()
    state = torch.load(checkpoints / f"step_{STEPS:08d}.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.002
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(STEPS))
    assert not (tmp_path / LOCK_NAME).exists()
