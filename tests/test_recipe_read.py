"""The READ audio-to-video recipe on a tiny config: losses vs a stored reference, exact resume,
the pipeline folder it ends with (driven by a user's wav and png, saved and streamed to mp4),
and the generate and evaluate entry points (the import rules are tests/test_structure.py's)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from avblocks.audio.frame_codes import FrameAudioCodec
from avblocks.data import probe, read_clip
from avblocks.data.mp4 import Mp4Writer
from avblocks.diffusion import FlowMatching
from avblocks.diffusion.timesteps import keep_clean_frames
from avblocks.dit.read_denoiser import ReadDenoiser
from avblocks.pipelines import Pipeline, ReadPipeline
from avblocks.pipelines.read import ReadSampling
from recipes.common.config import load_config
from recipes.read_a2v import evaluate, generate, train
from recipes.read_a2v.config import ReadRecipe
from recipes.read_a2v.evaluate import boundary_pairs, discontinuity
from tests.test_single_stream import write_png, write_wav

CONFIG = Path(__file__).parent.parent / "recipes" / "read_a2v" / "configs" / "test.yaml"
REFERENCE = Path(__file__).parent / "references" / "read_a2v_tiny_losses.json"


def run(out: Path, *extra: str) -> dict:
    return train.main(["--config", str(CONFIG), f"run.output_dir={out}", *extra])


def logged(out: Path) -> dict[str, list]:
    return {stage: [json.loads(line) for line in (out / stage / "log.jsonl").read_text().splitlines()]
            for stage in ("codec", "denoiser")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("read")
    run(out)
    return out


@pytest.fixture(scope="module")
def pipe(trained) -> ReadPipeline:
    return ReadPipeline.from_pretrained(trained / "pipeline")


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> tuple[Path, Path, torch.Tensor]:
    """A stereo 22.05 kHz wav of 11.4 video frames (at the spec's 8 fps) and a 32 x 32 png."""
    folder = tmp_path_factory.mktemp("user")
    sr, n = 22050, 31500
    t = np.arange(n) / sr
    tone = 0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sign(np.sin(2 * np.pi * 2 * t)))  # bursts
    wav = write_wav(folder / "speech.wav", np.stack([tone, 0.5 * tone]), sr)
    y, x = np.mgrid[0:32, 0:32]
    rgb = np.stack([y * 8, x * 8, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    png = write_png(folder / "face.png", rgb)
    return wav, png, torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1


def test_tiny_run_matches_reference_and_resumes_exactly(trained, tmp_path):
    observed = {stage: [row["total"] for row in rows if "total" in row]  # not the validation lines
                for stage, rows in logged(trained).items()}
    if os.environ.get("AVBLOCKS_UPDATE_REFERENCES") == "1":
        REFERENCE.write_text(json.dumps(observed, indent=1) + "\n")
    reference = json.loads(REFERENCE.read_text())
    for stage in ("codec", "denoiser"):
        assert observed[stage] == pytest.approx(reference[stage], rel=1e-4), stage
    # interrupt the denoiser after step 2 (its checkpoint at 4 and log lines 2.. are lost)
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(trained, copy)
    (copy / "denoiser" / "checkpoints" / "step_00000004.pt").unlink()
    shutil.rmtree(copy / "denoiser" / "model")
    log = (copy / "denoiser" / "log.jsonl").read_text().splitlines()
    (copy / "denoiser" / "log.jsonl").write_text("".join(line + "\n" for line in log[:2]))
    run(copy)
    assert logged(copy) == logged(trained)
    final = ReadDenoiser.from_pretrained(trained / "denoiser" / "model").state_dict()
    resumed = ReadDenoiser.from_pretrained(copy / "denoiser" / "model").state_dict()
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_the_run_ends_with_a_self_contained_pipeline_folder(trained, tmp_path):
    cfg = load_config(ReadRecipe, trained / "config.yaml")
    moved = tmp_path / "elsewhere"
    shutil.copytree(trained / "pipeline", moved)  # nothing outside the folder is needed
    pipe = Pipeline.from_pretrained(moved)
    assert isinstance(pipe, ReadPipeline)
    assert pipe.spec == cfg.data.spec()
    s = cfg.schedule
    assert pipe.sampling == ReadSampling(steps=s.sample_steps, guidance=s.guidance, lag=s.lag, shift=s.shift)
    assert pipe.denoiser.frames == 1 + s.motion_frames
    for module, saved in ((pipe.denoiser, ReadDenoiser.from_pretrained(trained / "denoiser" / "model")),
                          (pipe.codec.audio_codec, FrameAudioCodec.from_pretrained(trained / "codec" / "model"))):
        mine, theirs = module.state_dict(), saved.state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_pipeline_takes_a_users_wav_at_another_rate_and_a_png(pipe, user_files, tmp_path):
    wav, png, reference = user_files
    spf = pipe.spec.samples_per_frame
    out = pipe(audio=wav, reference=png, steps=2)
    frames = 31500 * pipe.spec.sample_rate // 22050 // spf  # the audio's whole frames at the spec's rate
    assert frames == 11 and pipe.spec.sample_rate != 22050
    assert out.video.shape == (1, 3, frames, 32, 32) and out.audio.shape == (1, frames * spf)
    assert out.spec.num_frames == frames and out.spec.fps == 8
    # frame 0 is the reference picture (the png is lossless at the spec's size)
    assert (out.video[0, :, 0] - reference).abs().mean() < 0.05
    assert (reference - reference.mean()).abs().mean() > 0.3  # ...which is no flat picture

    saved = out.save(tmp_path / "talking.mp4")
    info = probe(saved)
    assert info.fps == 8 and round((info.video_end - info.video_start) * info.fps) == frames
    assert (info.width, info.height, info.sample_rate) == (32, 32, pipe.spec.sample_rate)
    clip = read_clip(saved, num_frames=frames, fps=8, sample_rate=pipe.spec.sample_rate)
    assert clip.video.shape == (3, frames, 32, 32) and clip.audio.shape == (1, frames * spf)
    assert (clip.video - out.video[0]).abs().mean() < 0.05  # H.264 at crf 18
    assert pipe(audio=wav, reference=png, steps=2, frames=5).video.shape[2] == 5


def test_streaming_writes_the_frames_of_the_call(pipe, user_files, tmp_path, monkeypatch):
    wav, png, _ = user_files
    clips = pipe(audio=wav, reference=png, steps=2, seed=3)
    written = []
    write = Mp4Writer.write
    monkeypatch.setattr(Mp4Writer, "write", lambda self, frames: (written.append(frames), write(self, frames)))
    pipe.stream(wav, png, tmp_path / "streamed.mp4", steps=2, seed=3)
    assert len(written) > 1  # clip by clip, not all at the end
    assert torch.equal(torch.cat(written, dim=1).clamp(-1, 1), clips.video[0])
    streamed = read_clip(tmp_path / "streamed.mp4", num_frames=11, fps=8, sample_rate=16000)
    assert (streamed.video - clips.video[0]).abs().mean() < 0.05  # up to H.264's loss
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.mp4"]  # no temporaries


def test_long_generation_is_deterministic_and_four_clips_long(trained, pipe):
    cfg = load_config(ReadRecipe, trained / "config.yaml")
    motion = cfg.schedule.motion_frames
    frames = 4 * (motion + 1)  # at least 4x a training clip (reference included)
    video, wave = generate.driving_clip(cfg.data, frames)

    def once(seed, carry=True):
        _, clips = pipe.frames(wave, video[:, 0], frames=frames, steps=2, seed=seed, carry=carry)
        parts = list(clips)
        return parts, torch.cat(parts, dim=2)

    parts, a = once(0)
    _, b = once(0)
    _, c = once(1)
    _, no_carry = once(0, carry=False)
    assert a.shape == (1, 3, frames, cfg.data.size, cfg.data.size)
    sizes = [p.shape[2] for p in parts]
    assert sizes[:-1] == [motion] + [motion - 1] * (len(parts) - 2) and 1 <= sizes[-1] < motion
    assert len(parts) >= 4
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, no_carry)


def test_generate_entry_point_streams_a_playable_mp4(trained, tmp_path):
    summary = generate.main([f"run_dir={trained}", "frames=11", "steps=2", f"out={tmp_path / 'long.mp4'}"])
    assert summary["frames"] == 11
    clip = read_clip(tmp_path / "long.mp4", num_frames=11, fps=8, sample_rate=16000)
    assert clip.video.shape == (3, 11, 32, 32)
    assert clip.audio.shape[-1] == 11 * 2000
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed, not left
    with pytest.raises(SystemExit):  # one argument style: key=value, not flags
        generate.main([str(trained), "--frames", "11"])


def test_evaluate_entry_point_and_the_carry_ablation(trained, tmp_path):
    args = [f"run_dir={trained}", "clips=2", "frames=11", "steps=2"]
    report = evaluate.main([*args, f"out={tmp_path / 'eval.json'}"])
    assert json.loads((tmp_path / "eval.json").read_text()) == report
    assert (report["frames"], report["clip_frames"], report["carry"]) == (11, 4, True)
    assert report["sync"]["real"] == {"score": 1.0, "reverse": 1.0}  # the synthetic clips are in sync
    assert report["discontinuity"]["generated"]["boundary"] is not None
    ablated = evaluate.main([*args, "carry=false"])
    assert ablated["carry"] is False and ablated["discontinuity"]["real"] == report["discontinuity"]["real"]


def test_boundary_bookkeeping():
    # motion 4: clips cover frames 0-3, 3-6, 6-9: pairs (3, 4) and (6, 7) straddle boundaries
    assert boundary_pairs(10, 4) == [3, 6]
    video = torch.zeros(1, 1, 10, 2, 2)
    video[:, :, 4:] = 1.0  # one jump, at the first boundary
    video[:, :, 7:] = 3.0  # and a bigger one at the second
    assert discontinuity(video, 4) == {"boundary": 1.5, "within": 0.0}


def test_loss_weight_marks_the_moved_object_and_turns_velocity_error_into_clean_error():
    x0 = torch.full((1, 3, 3, 4, 4), -1.0)
    x0[0, :, 0, 0, 0] = 1.0  # the reference: the object at (0, 0)
    x0[0, :, 1, 2, 2] = 1.0  # motion frame 1: it moved to (2, 2)
    x0[0, :, 2, 0, 0] = 1.0  # motion frame 2: back where the reference has it
    t = torch.tensor([[0.0, 0.5, 0.02]])
    w = train.loss_weight(x0, t, object_weight=4.0, clean_loss=False)
    expected = torch.ones(1, 1, 3, 4, 4)
    expected[0, 0, 1, 0, 0] = expected[0, 0, 1, 2, 2] = 5.0  # where it was and where it is
    assert torch.equal(w, expected)
    assert train.loss_weight(x0, t, object_weight=0.0, clean_loss=False) is None
    both = train.loss_weight(x0, t, object_weight=4.0, clean_loss=True, min_time=0.05)
    assert torch.allclose(both, expected * torch.tensor([0.0025, 0.25, 0.0025]).view(1, 1, 3, 1, 1))

    # with clean_loss the weighted velocity loss is the MSE of the denoiser's clean frames
    torch.manual_seed(0)
    model = ReadDenoiser(size=8, frames=3, patch=4, hidden_size=16, depth=1, num_heads=2, audio_dim=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    flow, x0 = FlowMatching(), torch.randn(2, 3, 3, 8, 8)
    t, noise, audio = torch.tensor([[0.0, 0.3, 0.9], [0.0, 0.6, 0.1]]), torch.randn(2, 3, 3, 8, 8), torch.randn(2, 2, 4)
    mask = torch.tensor([[True, False, False]] * 2)
    weight = train.loss_weight(x0, t, object_weight=0.0, clean_loss=True)
    with torch.no_grad():
        loss = flow.loss(model, x0, t=t, noise=noise, clean_mask=mask, model_kwargs={"audio": audio}, weight=weight)
        x_t = keep_clean_frames(flow.interpolate(x0, noise, t), mask, x0)
        clean = flow.predict_x0(model(x_t, t, audio), x_t, t)
    assert torch.allclose(loss, (clean - x0)[:, :, 1:].square().mean(), atol=1e-5)
