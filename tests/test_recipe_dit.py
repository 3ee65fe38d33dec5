"""The ProAV-DiT denoiser recipe on a tiny config: losses, resume, latent cache, sampling modes."""

import json
import os
from pathlib import Path

import pytest
import torch
from same_clip import assert_same_clip

from avblocks.codecs import TriPlaneCodec
from avblocks.data import read_clip
from avblocks.dit.packed_stdit import PackedSTDiT
from avblocks.dit.stdit import STDiT
from avblocks.latent.planes import AUDIO_PLANES, VIDEO_PLANES
from avblocks.pipelines import Pipeline, ProAVDiTPipeline
from recipes.proav_dit import train_autoencoder, train_dit
from recipes.proav_dit.codec import cached_latents, load_codec
from recipes.proav_dit.train_dit import clean_masks

REFERENCE = Path(__file__).parent / "references" / "dit_tiny_losses.json"
AE = ["data.num_clips=8", "data.num_frames=8", "data.size=16", "model.hidden_channels=16",
      "model.latent_channels=4", "model.depth=1", "model.heads=2", "model.groups=2",
      "optim.steps=2", "optim.warmup=1", "optim.batch_size=2", "run.eval_clips=2", "run.progress=false"]
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
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [line["total"] for line in lines if "total" in line]  # not the validation / sample lines


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


@pytest.mark.parametrize("layout", ["canvas", "packed"])
def test_the_clean_loss_weighting_counts_each_plane_by_t_squared(tmp_path, autoencoder_run, layout):
    """diffusion.loss_weighting=clean: the first step (same weights, batch, times and noise as the
    plain run) weighs every squared error by t^2 <= 1, so its loss is below the plain one."""
    plain = run_dit(tmp_path / "plain", autoencoder_run, f"model.layout={layout}", "optim.steps=1")
    clean = run_dit(tmp_path / "clean", autoencoder_run, f"model.layout={layout}", "optim.steps=1",
                    "diffusion.loss_weighting=clean")
    assert plain["steps"] == clean["steps"] == 1
    assert 0 < losses(tmp_path / "clean")[0] < 0.9 * losses(tmp_path / "plain")[0]


def test_latents_are_cached_and_round_trip_through_the_stack(autoencoder_run, monkeypatch):
    codec, data = load_codec(autoencoder_run, patch=2)
    first = cached_latents(codec, data, autoencoder_run, progress=False)
    assert first["latents"].shape[:3] == (8, 4, 6) and first["labels"].shape == (8,)
    assert torch.all(first["latents"][:] * ~codec.valid_mask == 0)  # padding is exactly zero
    monkeypatch.setattr(TriPlaneCodec, "encode_frames", lambda *a: pytest.fail("re-encoded"))
    again = cached_latents(codec, data, autoencoder_run, progress=False)
    assert torch.equal(again["latents"][:], first["latents"][:])


def test_clean_masks_hold_one_modality():
    mask = clean_masks(4000, 0.2, 0.3, torch.Generator().manual_seed(0))
    audio_only = mask[:, AUDIO_PLANES].all(1) & ~mask[:, VIDEO_PLANES].any(1)
    video_only = mask[:, VIDEO_PLANES].all(1) & ~mask[:, AUDIO_PLANES].any(1)
    assert (audio_only | video_only | ~mask.any(1)).all()
    assert audio_only.float().mean() == pytest.approx(0.2, abs=0.03)
    assert video_only.float().mean() == pytest.approx(0.3, abs=0.03)


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory, autoencoder_run) -> Path:
    out = tmp_path_factory.mktemp("dit")
    run_dit(out, autoencoder_run)
    return out


@pytest.mark.parametrize("held", [AUDIO_PLANES, VIDEO_PLANES])
def test_conditional_modes_keep_the_given_planes_exactly(dit_run, autoencoder_run, held):
    pipe = ProAVDiTPipeline.from_pretrained(dit_run / "pipeline")
    codec, data = load_codec(autoencoder_run, patch=2)
    condition = cached_latents(codec, data, autoencoder_run, progress=False)["latents"][:2]
    clean = torch.zeros(2, 6, dtype=torch.bool)
    clean[:, held] = True
    out = pipe.sample_latents(torch.tensor([0, 1]), condition=condition, clean=clean, steps=2, sampler="heun",
                              cfg_scale=1.0, seed=0, progress=False)
    assert torch.equal(out[:, :, held], condition[:, :, held])
    assert not torch.equal(out, condition)
    # decoded, the given modality is exactly the codec round trip of what was given
    given = pipe.codec.decode_frames(condition)
    decoded = pipe.codec.decode_frames(out)
    index = 1 if held == AUDIO_PLANES else 0
    assert torch.equal(decoded[index], given[index])
    assert not torch.equal(decoded[1 - index], given[1 - index])


def test_the_run_saves_a_pipeline_that_samples_playable_files(tmp_path, dit_run):
    pipe = Pipeline.from_pretrained(dit_run / "pipeline")
    assert isinstance(pipe, ProAVDiTPipeline)
    assert pipe.sampling.steps == 16 and pipe.sampling.sampler == "heun"  # the recipe's `sample` section
    denoiser = STDiT.from_pretrained(dit_run / "model")
    assert all(torch.equal(a, b) for a, b in zip(pipe.denoiser.state_dict().values(),
                                                  denoiser.state_dict().values(), strict=True))
    clips = pipe(labels=[0, 1, 2, 3], steps=2, progress=False)
    paths = clips.save(tmp_path / "s" / "joint.mp4")
    assert len(paths) == 4
    clip = read_clip(paths[0], num_frames=8, fps=8, sample_rate=16000)
    assert clip.video.shape == (3, 8, 16, 16) and clip.audio.shape[-1] == 16000
    clips.preview(tmp_path / "s" / "joint.png")
    assert (tmp_path / "s" / "joint.png").stat().st_size > 0


def test_the_packed_layout_trains_saves_and_holds_the_given_planes(tmp_path, autoencoder_run):
    """model.layout=packed: the latents are cached packed (no padding cell), the run saves a
    packed pipeline, and its conditional modes keep the given planes exactly."""
    result = run_dit(tmp_path, autoencoder_run, "model.layout=packed", "model.across=time")
    assert result["steps"] == 4 and all(loss == loss for loss in losses(tmp_path))
    codec, data = load_codec(autoencoder_run, patch=2, layout="packed")
    latents = cached_latents(codec, data, autoencoder_run, progress=False)["latents"]
    assert latents.shape == (8, *codec.latent_shape(1)[1:]) and codec.valid_mask.all()
    pipe = Pipeline.from_pretrained(tmp_path / "pipeline")
    assert isinstance(pipe.denoiser, PackedSTDiT) and pipe.denoiser.config.across == "time"
    clean = torch.zeros(2, 6, dtype=torch.bool)
    clean[:, AUDIO_PLANES] = True
    out = pipe.sample_latents(torch.tensor([0, 1]), condition=latents[:2], clean=clean, steps=2, sampler="heun",
                              cfg_scale=2.0, seed=0, progress=False)
    kept = [torch.equal(a, b) for a, b in zip(codec.layout.split(out), codec.layout.split(latents[:2]), strict=True)]
    assert kept == [False, False, False, True, True, True]


# ---- watching a run (recipes/common/watch.py) -------------------------------------------------

WATCHED = ["run.eval_every=2", "run.eval_clips=2", "run.samples=2", "run.sample_every=2"]
SCALARS = {"loss/total", "lr", "grad_norm", "throughput/clips_per_s", "memory/peak_rss_mib", "validation/total"}


def scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's one TensorBoard event file, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(out))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def peak_rss_mib_now() -> float:
    """The process's peak resident set as Linux reports it (VmHWM), independently of the recipe."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def test_a_watched_run_logs_every_scalar_the_validation_loss_and_samples(tmp_path, autoencoder_run, capsys):
    import time

    from avblocks.diffusion import FlowMatching

    began = time.monotonic()
    run_dit(tmp_path, autoencoder_run, *WATCHED)
    wall = time.monotonic() - began
    assert capsys.readouterr().out.count(f"tensorboard --logdir {tmp_path}\n") == 1
    found = scalars(tmp_path)
    assert SCALARS <= set(found)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    trained = [line for line in log if "total" in line]
    # the curves are the log's numbers (rounded to 6 decimals there, float32 in the event file)
    assert [s for s, _ in found["loss/total"]] == [line["step"] for line in trained] == [0, 1, 2, 3]
    for tag, key in (("loss/total", "total"), ("lr", "lr")):
        assert [v for _, v in found[tag]] == pytest.approx([line[key] for line in trained], rel=1e-6, abs=1e-6)
    assert all(0 < v < 1e3 for _, v in found["grad_norm"])
    # throughput: the time it implies for the 4 steps of 4 clips fits in the run's wall time
    assert 0 < sum(4 / v for _, v in found["throughput/clips_per_s"]) < wall
    assert 100 < max(v for _, v in found["memory/peak_rss_mib"]) <= peak_rss_mib_now() + 1
    # the validation loss at steps 2 and 4, recomputed here by hand from the step-4 checkpoint's
    # live weights on the held-out clips (the documented seeding: run.seed, noise off the padding)
    validation = [line for line in log if "validation" in line]
    assert [line["step"] for line in validation] == [s for s, _ in found["validation/total"]] == [2, 4]
    assert [v for _, v in found["validation/total"]] == pytest.approx(
        [line["validation"]["total"] for line in validation], rel=1e-6, abs=1e-6)
    codec, data = load_codec(autoencoder_run, patch=2)
    video, audio, labels = data.model_inputs(data.held_out_batch(2))
    with torch.no_grad():
        x0 = codec.encode_frames(video, audio)
        denoiser = STDiT.from_pretrained(tmp_path / "model")  # its shape; the weights come next
        denoiser.load_state_dict(torch.load(tmp_path / "checkpoints" / "step_00000004.pt")["model"])
        torch.manual_seed(0)
        flow = FlowMatching(time_distribution="logit_normal", shift=1.0)
        t = codec.frame_values(flow.sample_timesteps(2)[:, None].expand(2, 6).contiguous())
        noise = torch.randn_like(x0) * codec.valid_mask[None, None]
        mask = codec.frame_values(clean_masks(2, 0.1, 0.1))
        expected = flow.loss(denoiser.eval(), x0, t=t, noise=noise, clean_mask=mask, model_kwargs={"y": labels})
    assert validation[-1]["validation"]["total"] == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    # samples at steps 2 and 4, listed in the log, whole, and at step 4 exactly what the saved
    # pipeline gives for the same call (what you watch is what you get)
    listed = [line for line in log if "samples" in line]
    assert [line["step"] for line in listed] == [2, 4]
    for line in listed:
        folder = tmp_path / "samples" / f"step_{line['step']:06d}"
        names = ["clip_00.mp4", "clip_01.mp4", "contact_sheet.png"]
        assert line["samples"] == [f"samples/{folder.name}/{name}" for name in names]
        assert sorted(p.name for p in folder.iterdir()) == names
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000002", "step_000004"]
    watched = read_clip(tmp_path / "samples" / "step_000004" / "clip_01.mp4", num_frames=8, fps=8, sample_rate=16000)
    Pipeline.from_pretrained(tmp_path / "pipeline")(labels=[0, 1], seed=0, progress=False).save(tmp_path / "got.mp4")
    got, other = (read_clip(tmp_path / f"got_{i:02d}.mp4", num_frames=8, fps=8, sample_rate=16000) for i in (1, 0))
    assert watched.video.shape == (3, 8, 16, 16) and watched.video.std() > 0
    assert_same_clip(watched, got, other)


def test_watching_switched_off_writes_no_event_file_and_no_samples(tmp_path, autoencoder_run, capsys):
    run_dit(tmp_path, autoencoder_run, *WATCHED, "run.tensorboard=false", "run.eval_every=0", "run.samples=0")
    assert "tensorboard --logdir" not in capsys.readouterr().out
    assert not list(tmp_path.rglob("*tfevents*")) and not (tmp_path / "samples").exists()
    assert all("total" in json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines())
