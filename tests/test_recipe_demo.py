"""The README's main command on a tiny config: every stage runs and writes what it promises."""

import json
import warnings

import pytest

from recipes.common import feature_net
from recipes.proav_dit import demo, train_autoencoder, train_dit

DATA = ["data.num_clips=8", "data.num_frames=8", "data.size=16"]
AE = [*DATA, "model.hidden_channels=16", "model.latent_channels=4", "model.depth=1", "model.heads=2",
      "model.groups=2", "optim.steps=2", "optim.warmup=1", "optim.batch_size=2", "run.eval_clips=2"]
DIT = ["model.hidden_size=32", "model.depth=1", "model.num_heads=2", "optim.steps=2", "optim.warmup=1",
       "optim.batch_size=4"]
FEATURES = ["model.num_frames=8", "model.size=16", "model.channels=[8, 8, 8]", "model.dim=16",
            "model.temporal_channels=16", "model.groups=4", "optim.batch_size=4", "data.held_out_clips=8"]


def args(out) -> list[str]:
    def listing(key, values):
        return f"{key}=[{', '.join(repr(v) for v in values)}]"

    return [f"output_dir={out}", "per_class=1", "sample_steps=2", "feature_steps=2", "progress=false",
            listing("autoencoder_overrides", AE), listing("dit_overrides", DIT),
            listing("feature_overrides", FEATURES)]


def test_demo_writes_samples_contact_sheet_and_metrics(tmp_path, monkeypatch):
    metrics = demo.main(args(tmp_path))
    samples = sorted((tmp_path / "samples").glob("*.mp4"))
    assert len(samples) == 4  # one per class
    assert len(list((tmp_path / "samples_audio_to_video").glob("*.mp4"))) == 4
    assert (tmp_path / "samples" / "joint_contact_sheet.png").stat().st_size > 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    for key in ("sync_generated", "sync_real", "sync_shuffled", "sync_audio_to_video"):
        assert {"score", "reverse", "onsets", "bounces"} <= written[key].keys()
    assert {"video_frechet", "video_kernel", "audio_frechet", "audio_kernel"} <= written.keys()
    assert written["sync_real"]["score"] == 1.0  # the detectors on real clips (see test_sync_metrics)
    files = written["sync_from_mp4"]  # the same clips through mp4 (see test_sync_eval)
    assert {"real", "joint", "audio_to_video", "shuffled"} <= files.keys()
    assert {"event_f1_exact", "event_f1_1frame", "av_align", "onset_ratio", "integrity"} <= files["joint"].keys()
    assert files["real"]["event_f1_1frame"] == 1.0 and files["real"]["integrity"] == 1.0
    assert len(list((tmp_path / "sync_eval" / "joint").glob("clip_*.mp4"))) == 4
    assert written["dit"]["steps"] == written["dit"]["planned_steps"]  # step counts, not the time cap, ended it

    # a second run reuses every trained stage and only samples again
    for module, name in ((train_autoencoder, "train"), (train_dit, "train"), (feature_net, "train")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("retrained a finished stage"))
    demo.main(args(tmp_path))


def test_a_stage_stopped_by_its_time_cap_is_warned_about_and_recorded():
    with pytest.warns(UserWarning, match="denoiser stopped at step 190 of 750"):
        result = demo.finished_steps({"steps": 190}, 750, "denoiser")
    assert result == {"steps": 190, "planned_steps": 750}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert demo.finished_steps({"steps": 750}, 750, "denoiser")["planned_steps"] == 750
