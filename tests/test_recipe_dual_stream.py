"""The dual-stream recipe on a tiny config: losses vs a stored reference, exact resume, the
pipeline folder it saves (joint / audio-to-video / video-to-audio to playable mp4 files), the
sync evaluation on mp4 files and the command line."""

import json
import os
from pathlib import Path

import pytest
import torch
from same_clip import assert_same_clip

from avblocks.config import ConfigError
from avblocks.data import read_clip
from avblocks.dit.dual_stream import DualStreamDiT
from avblocks.pipelines import DualStreamPipeline, Pipeline
from recipes import cli
from recipes.dual_stream import evaluate_sync, train
from recipes.dual_stream.config import DualStreamRecipe, validate
from recipes.dual_stream.train import stream_modes

REFERENCE = Path(__file__).parent / "references" / "dual_stream_tiny_losses.json"
TINY = ["data.num_clips=8", "data.num_frames=4", "data.size=16", "model.video_patch=8", "model.video_width=16",
        "model.audio_width=8", "model.depth=2", "model.num_heads=2", "model.coupling.heads=2",
        "optim.steps=4", "optim.batch_size=4", "optim.warmup=1", "run.checkpoint_every=2", "run.log_every=1",
        "run.progress=false", "sample.steps=2"]


def run(out: Path, *extra: str) -> dict:
    return train.main([*TINY, f"run.output_dir={out}", *extra])


def losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [line["total"] for line in lines if "total" in line]  # not the validation / sample lines


def test_tiny_run_matches_reference_and_resumes_exactly(tmp_path):
    run(tmp_path)
    observed = losses(tmp_path)
    if os.environ.get("AVBLOCKS_UPDATE_REFERENCES") == "1":
        REFERENCE.write_text(json.dumps(observed, indent=1) + "\n")
    assert observed == pytest.approx(json.loads(REFERENCE.read_text()), rel=1e-4)
    final = DualStreamDiT.from_pretrained(tmp_path / "model").state_dict()
    (tmp_path / "checkpoints" / "step_00000004.pt").unlink()
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    (tmp_path / "log.jsonl").write_text("".join(line + "\n" for line in log[:2]))
    run(tmp_path)
    assert losses(tmp_path) == observed
    resumed = DualStreamDiT.from_pretrained(tmp_path / "model").state_dict()
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_stream_modes_hold_one_stream_at_a_time():
    video, audio = stream_modes(4000, 0.2, 0.3, torch.Generator().manual_seed(0))
    assert not (video & audio).any()
    assert audio.float().mean() == pytest.approx(0.2, abs=0.03)
    assert video.float().mean() == pytest.approx(0.3, abs=0.03)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dual_stream")
    run(out, "model.coupling.kind=joint")
    return out


def test_the_run_saves_a_pipeline_that_samples_every_mode_to_playable_files(tmp_path, finished):
    pipe = Pipeline.from_pretrained(finished / "pipeline")
    assert isinstance(pipe, DualStreamPipeline) and pipe.sampling.steps == 2
    assert pipe.denoiser.config.coupling.kind == "joint"
    joint = pipe(labels=[0, 1], progress=False)
    paths = joint.save(tmp_path / "joint.mp4")
    clip = read_clip(paths[0], num_frames=4, fps=8, sample_rate=16000)
    assert clip.video.shape == (3, 4, 16, 16) and clip.audio.shape[-1] == 8000
    wave = torch.sin(torch.linspace(0, 400, 8000))[None] * 0.5
    a2v = pipe(audio=wave, labels=0, progress=False)
    assert torch.equal(a2v.audio, wave)  # the given sound goes out as given
    v2a = pipe(video=joint.video[:1], progress=False, step_cache={"video_threshold": 0.1, "audio_threshold": 0.1})
    assert torch.equal(v2a.video, joint.video[:1]) and pipe.last_cache.streams["video"].computed == 1
    v2a.save(tmp_path / "v2a.mp4")
    assert read_clip(tmp_path / "v2a.mp4", num_frames=4, fps=8, sample_rate=16000).audio.abs().max() > 0
    with pytest.raises(ValueError, match="not both"):
        pipe(audio=wave, video=joint.video[:1])


def test_the_sync_evaluation_scores_every_mode_from_mp4_files(tmp_path, finished):
    metrics = evaluate_sync.main([f"run_dir={finished}", "clips=2", "data.num_frames=4", "data.size=16",
                                  f"out={tmp_path}"])
    assert {"joint", "audio_to_video", "video_to_audio", "real", "shuffled"} <= set(metrics["sets"])
    assert metrics["coupling"] == "joint" and metrics["steps"] == 2
    assert metrics["sets"]["real"]["event_f1_exact"] == 1.0
    assert len(list((tmp_path / "audio_to_video").glob("*.mp4"))) == 2
    with pytest.raises(ConfigError, match="makes clips"):  # the data section must be the run's
        evaluate_sync.main([f"run_dir={finished}", "clips=2", f"out={tmp_path / 'x'}"])


def test_the_command_line_lists_and_checks_the_recipe(capsys):
    assert cli.main(["ls"]) == 0
    listed = capsys.readouterr().out
    assert "dual_stream.train" in listed and "dual_stream/tiny" in listed
    cfg = DualStreamRecipe()
    cfg.model.audio_patch = 3
    with pytest.raises(ConfigError, match=r"model.audio_patch \(3\) must divide the spectrogram columns per frame"):
        validate(cfg)
    cfg = DualStreamRecipe()
    cfg.model.coupling.kind, cfg.model.coupling.groups = "gcm", 5
    with pytest.raises(ConfigError, match=r"model.coupling.groups \(5\) must divide data.num_frames \(16\)"):
        validate(cfg)


def test_a_watched_run_validates_per_stream_and_samples_through_its_pipeline(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path, "run.eval_every=2", "run.eval_clips=2", "run.samples=2", "run.sample_every=2")
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    validation = [line for line in log if "validation" in line]
    assert [line["step"] for line in validation] == [2, 4]
    assert set(validation[-1]["validation"]) == {"total", "video", "audio"}
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"loss/video", "loss/audio", "validation/video", "validation/audio"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("validation/audio")] == pytest.approx(
        [line["validation"]["audio"] for line in validation], rel=1e-6, abs=1e-6)
    samples = [line for line in log if "samples" in line]
    assert [line["step"] for line in samples] == [2, 4]
    assert all((tmp_path / path).stat().st_size > 1000 for line in samples for path in line["samples"])
    # the last set is what the saved pipeline gives for the same call
    watched = read_clip(tmp_path / "samples" / "step_000004" / "clip_00.mp4", num_frames=4, fps=8, sample_rate=16000)
    Pipeline.from_pretrained(tmp_path / "pipeline")(labels=[0, 1], seed=0, progress=False).save(tmp_path / "got.mp4")
    got, other = (read_clip(tmp_path / f"got_{i:02d}.mp4", num_frames=4, fps=8, sample_rate=16000) for i in (0, 1))
    assert_same_clip(watched, got, other)
