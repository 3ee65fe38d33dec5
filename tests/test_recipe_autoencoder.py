"""The autoencoder recipe's entry point on a tiny config: losses, exact resume, outputs."""

import json
import os
from pathlib import Path

import pytest
import torch
from tiny_runs import AUTOENCODER

from recipes.proav_dit import train_autoencoder
from recipes.proav_dit.evaluate_autoencoder import main as evaluate_main

REFERENCE = Path(__file__).parent / "references" / "autoencoder_tiny_losses.json"
TINY = [*AUTOENCODER, "optim.steps=4", "run.checkpoint_every=2", "run.eval_clips=2"]


def run(tmp_path: Path, *extra: str) -> dict:
    return train_autoencoder.main([*TINY, f"run.output_dir={tmp_path}", *extra])


def losses(out: Path) -> list[float]:
    return [json.loads(line)["total"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_tiny_run_matches_reference_losses_and_writes_outputs(tmp_path):
    metrics = run(tmp_path)
    observed = losses(tmp_path)
    if os.environ.get("AVBLOCKS_UPDATE_REFERENCES") == "1":
        REFERENCE.write_text(json.dumps(observed, indent=1) + "\n")
    assert observed == pytest.approx(json.loads(REFERENCE.read_text()), rel=1e-4)
    assert observed[-1] < observed[0]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")) == ["step_00000002.pt",
                                                                                   "step_00000004.pt"]
    eval_dir = tmp_path / "eval"
    assert len(list(eval_dir.glob("*.mp4"))) == 2 and len(list(eval_dir.glob("*.png"))) == 2
    assert json.loads((eval_dir / "metrics.json").read_text())["clips"] == 2
    assert {"psnr", "ssim", "lsd", "mel_l1", "sync_reconstruction", "sync_original"} <= metrics.keys()


def test_resume_continues_exactly(tmp_path):
    run(tmp_path)
    uninterrupted = losses(tmp_path)
    final = torch.load(tmp_path / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]
    # simulate a crash after the step-2 checkpoint: drop what came later, run again
    (tmp_path / "checkpoints" / "step_00000004.pt").unlink()
    (tmp_path / "log.jsonl").write_text("".join(
        line + "\n" for line in (tmp_path / "log.jsonl").read_text().splitlines()[:2]))
    run(tmp_path)
    assert losses(tmp_path) == uninterrupted
    resumed = torch.load(tmp_path / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_unknown_override_fails_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path, "optim.momentum=0.9")
    assert "momentum" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_evaluate_entry_point_reads_a_finished_run(tmp_path):
    run(tmp_path)
    metrics = evaluate_main([f"run_dir={tmp_path}", "clips=2"])
    assert metrics["clips"] == 2 and metrics["psnr"] > 0
