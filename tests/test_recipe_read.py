"""The READ audio-to-video recipe on a tiny config: losses vs a stored reference, exact resume,
deterministic long generation streamed to a playable mp4, the evaluation's bookkeeping."""

import json
import os
from pathlib import Path

import pytest
import torch

from avblocks.data import read_clip
from avblocks.dit.read_denoiser import ReadDenoiser
from recipes.read_a2v import generate, train
from recipes.read_a2v.evaluate import boundary_pairs, discontinuity
from recipes.read_a2v.generate import iter_long_generation, load_run, num_clips

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


def test_tiny_run_matches_reference_and_resumes_exactly(trained, tmp_path):
    observed = {stage: [row["total"] for row in rows] for stage, rows in logged(trained).items()}
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


def test_clip_count_covers_the_video_exactly():
    for motion in (2, 3, 4, 8):
        for frames in range(1, 40):
            covered, clips = motion, 1
            while covered < frames:
                covered, clips = covered + motion - 1, clips + 1
            assert num_clips(frames, motion) == clips


def test_long_generation_is_deterministic_and_four_clips_long(trained):
    cfg, data, codec, model, schedule = load_run(trained)
    motion = cfg.schedule.motion_frames
    frames = 4 * (motion + 1)  # at least 4x a training clip (reference included)
    video, _, audio = generate.driving_clip(cfg, data, frames)
    codes = codec.encode(audio)

    def once(seed):
        parts = list(iter_long_generation(model, codes, video[None, :, 0], schedule=schedule,
                                          steps=2, seed=seed))
        return parts, torch.cat(parts, dim=2)

    parts, a = once(0)
    _, b = once(0)
    _, c = once(1)
    assert a.shape == (1, 3, frames, cfg.data.size, cfg.data.size)
    sizes = [p.shape[2] for p in parts]
    assert sizes[:-1] == [motion] + [motion - 1] * (len(parts) - 2) and 1 <= sizes[-1] < motion
    assert len(parts) == num_clips(frames, motion) >= 4
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generate_entry_point_streams_a_playable_mp4(trained, tmp_path):
    summary = generate.main([str(trained), "--frames", "11", "--steps", "2",
                             "--out", str(tmp_path / "long.mp4")])
    assert summary["frames"] == 11
    clip = read_clip(tmp_path / "long.mp4", num_frames=11, fps=8, sample_rate=16000)
    assert clip.video.shape == (3, 11, 32, 32)
    assert clip.audio.shape[-1] == 11 * 2000
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left


def test_boundary_bookkeeping():
    # motion 4: clips cover frames 0-3, 3-6, 6-9: pairs (3, 4) and (6, 7) straddle boundaries
    assert boundary_pairs(10, 4) == [3, 6]
    video = torch.zeros(1, 1, 10, 2, 2)
    video[:, :, 4:] = 1.0  # one jump, at the first boundary
    video[:, :, 7:] = 3.0  # and a bigger one at the second
    assert discontinuity(video, 4) == {"boundary": 1.5, "within": 0.0}


def test_audio_guidance_combines_the_two_branches():
    torch.manual_seed(0)
    model = ReadDenoiser(size=16, frames=3, patch=8, hidden_size=16, depth=1, num_heads=2,
                         audio_dim=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x, t, audio = torch.randn(2, 3, 3, 16, 16), torch.rand(2, 3), torch.randn(2, 2, 4)
    dropped = torch.ones(2, dtype=torch.bool)
    null = model(x, t, audio, dropped)
    assert torch.equal(null, model(x, t, torch.randn(2, 2, 4), dropped))  # audio unheard
    cond = model(x, t, audio)
    guided = generate.AudioGuidance(model, 3.0)(x, t, audio)
    torch.testing.assert_close(guided, null + 3.0 * (cond - null), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_step_caches_wrap_the_denoiser_blocks():
    from avblocks.dit.cache import FirstBlockCache, TeaCache

    torch.manual_seed(0)
    model = ReadDenoiser(size=16, frames=3, patch=8, hidden_size=16, depth=2, num_heads=2,
                         audio_dim=4).eval()
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.2)
    x, t, audio = torch.randn(1, 3, 3, 16, 16), torch.rand(1, 3), torch.randn(1, 2, 4)
    plain = model(x, t, audio)
    for kind in (FirstBlockCache, TeaCache):
        with kind(model, threshold=0.0) as cache:
            assert torch.equal(model(x, t, audio), plain)  # the audio reached every block
            assert cache.stats.computed == 1
