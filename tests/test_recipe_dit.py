"""The ProAV-DiT denoiser recipe on a tiny config: losses, resume, latent cache, sampling modes."""

import json
import os
from pathlib import Path

import pytest
import torch

from avblocks.dit.stdit import STDiT
from recipes.proav_dit import latents as latents_module
from recipes.proav_dit import train_autoencoder, train_dit
from recipes.proav_dit.latents import AUDIO, VIDEO, LatentSpace, cached_latents
from recipes.proav_dit.sample import generate
from recipes.proav_dit.sample import main as sample_main
from recipes.proav_dit.train_dit import clean_masks

REFERENCE = Path(__file__).parent / "references" / "dit_tiny_losses.json"
AE = ["data.num_clips=8", "data.num_frames=8", "data.size=16", "model.hidden_channels=16",
      "model.latent_channels=4", "model.depth=1", "model.heads=2", "model.groups=2",
      "optim.steps=2", "optim.batch_size=2", "run.eval_clips=2", "run.progress=false"]
DIT = ["model.hidden_size=32", "model.depth=1", "model.num_heads=2", "optim.steps=4",
       "optim.batch_size=4", "optim.warmup=1", "run.checkpoint_every=2", "run.log_every=1",
       "run.progress=false"]


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("autoencoder")
    train_autoencoder.main([*AE, f"run.output_dir={out}"])
    return out


def run_dit(out: Path, autoencoder: Path, *extra: str) -> dict:
    return train_dit.main([*DIT, f"autoencoder={autoencoder}", f"run.output_dir={out}", *extra])


def losses(out: Path) -> list[float]:
    return [json.loads(line)["total"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_tiny_run_matches_reference_and_resumes_exactly(tmp_path, autoencoder_run):
    run_dit(tmp_path, autoencoder_run)
    observed = losses(tmp_path)
    if os.environ.get("AVBLOCKS_UPDATE_REFERENCES") == "1":
        REFERENCE.write_text(json.dumps(observed, indent=1) + "\n")
    assert observed == pytest.approx(json.loads(REFERENCE.read_text()), rel=1e-4)
    final = STDiT.from_pretrained(tmp_path / "model").state_dict()
    (tmp_path / "checkpoints" / "step_00000004.pt").unlink()
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    (tmp_path / "log.jsonl").write_text("".join(line + "\n" for line in log[:2]))
    run_dit(tmp_path, autoencoder_run)
    assert losses(tmp_path) == observed
    resumed = STDiT.from_pretrained(tmp_path / "model").state_dict()
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    # a finished run, rerun, trains nothing and says it has done exactly its steps
    again = run_dit(tmp_path, autoencoder_run)
    assert again["steps"] == 4 and losses(tmp_path) == observed


def test_latents_are_cached_and_round_trip_through_the_stack(autoencoder_run, monkeypatch):
    space = LatentSpace.from_run(autoencoder_run, multiple=2)
    first = cached_latents(space, autoencoder_run, progress=False)
    assert first["latents"].shape[:3] == (8, 4, 6) and first["labels"].shape == (8,)
    assert torch.all(first["latents"] * ~space.valid_mask == 0)  # padding is exactly zero
    monkeypatch.setattr(latents_module.LatentSpace, "encode", lambda *a: pytest.fail("re-encoded"))
    again = cached_latents(space, autoencoder_run, progress=False)
    assert torch.equal(again["latents"], first["latents"])


def test_clean_masks_hold_one_modality():
    mask = clean_masks(4000, 0.2, 0.3, torch.Generator().manual_seed(0))
    audio_only = mask[:, AUDIO].all(1) & ~mask[:, VIDEO].any(1)
    video_only = mask[:, VIDEO].all(1) & ~mask[:, AUDIO].any(1)
    assert (audio_only | video_only | ~mask.any(1)).all()
    assert audio_only.float().mean() == pytest.approx(0.2, abs=0.03)
    assert video_only.float().mean() == pytest.approx(0.3, abs=0.03)


@pytest.mark.parametrize("mode, held", [("a2v", AUDIO), ("v2a", VIDEO)])
def test_conditional_modes_keep_the_given_planes_exactly(tmp_path, autoencoder_run, mode, held):
    run_dit(tmp_path, autoencoder_run)
    space = LatentSpace.from_run(autoencoder_run, multiple=2)
    denoiser = STDiT.from_pretrained(tmp_path / "model")
    condition = cached_latents(space, autoencoder_run, progress=False)["latents"][:2]
    out = generate(space, denoiser, torch.tensor([0, 1]), steps=2, mode=mode, condition=condition,
                   progress=False)
    assert torch.equal(out[:, :, held], condition[:, :, held])
    assert not torch.equal(out, condition)
    with pytest.raises(ValueError, match="needs a condition"):
        generate(space, denoiser, torch.tensor([0]), steps=2, mode=mode, progress=False)


def test_sample_entry_point_writes_playable_files(tmp_path, autoencoder_run):
    run_dit(tmp_path, autoencoder_run)
    summary = sample_main([str(tmp_path), "--per-class", "1", "--steps", "2", "--out", str(tmp_path / "s")])
    mp4s = sorted((tmp_path / "s").glob("*.mp4"))
    assert summary["clips"] == len(mp4s) == 4  # 4 classes x 1
    from avblocks.data import read_clip

    clip = read_clip(mp4s[0], num_frames=8, fps=8, sample_rate=16000)
    assert clip.video.shape[1] == 8 and clip.audio.shape[-1] == 16000
    assert (tmp_path / "s" / "joint_contact_sheet.png").stat().st_size > 0
