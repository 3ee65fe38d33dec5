"""Every sync metric from mp4 files written and read back (recipes.common.sync_eval), and each
system's ``evaluate_sync`` entry point run on a tiny random pipeline folder."""

import json
import math

import pytest

from avblocks.pipelines import SoundingVideo
from recipes.av_dit import evaluate_sync as av_dit_eval
from recipes.common.config import load_config
from recipes.common.sync_eval import SyncEvalConfig, evaluate_sets, held_out, set_metrics
from recipes.proav_dit import evaluate_sync as proav_eval
from recipes.read_a2v import evaluate_sync as read_eval
from tests.test_pipelines import av_dit_pipeline, proav_pipeline, read_pipeline


def _strict_json(path):
    def refuse(token):
        raise AssertionError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_every_metric_from_mp4_files(tmp_path):
    cfg = load_config(SyncEvalConfig, None, ["run_dir=unused", "clips=6", "shifts=[1, 3]"])
    real = held_out(cfg)
    spec = cfg.data.spec()
    perfect = SoundingVideo(real["video"], real["audio"], spec, real["label"])  # a generator that copies
    metrics = evaluate_sets(tmp_path, {"copy": perfect}, real, spec, cfg, num_classes=4)
    saved = _strict_json(tmp_path / "metrics.json")
    assert saved["sets"].keys() == {"real", "copy", "shuffled", "shifted_1", "shifted_3"}
    assert len(list((tmp_path / "copy").glob("clip_*.mp4"))) == 6
    sets = metrics["sets"]
    real_row, copy_row = sets["real"], sets["copy"]
    for key in ("event_f1_exact", "event_f1_1frame", "onsets", "bounces", "timing_error_ms"):
        assert copy_row[key] == real_row[key]  # the same mp4 content, the same numbers
    assert copy_row["onset_ratio"] == 1.0 and copy_row["integrity"]["score"] == 1.0
    assert real_row["event_f1_exact"] >= 0.9 and real_row["event_f1_1frame"] == 1.0
    assert real_row["timing_error_ms"] < 3.0
    assert sets["shuffled"]["event_f1_exact"] < 0.5 < real_row["event_f1_exact"]
    assert sets["shifted_3"]["av_align"]["pooled"] < real_row["av_align"]["pooled"]
    assert sets["shifted_1"]["event_f1_exact"] < 0.3 and sets["shifted_1"]["event_f1_1frame"] > 0.9
    assert saved["sets"]["real"]["desync_s"] is None  # no model given: not measured
    table = (tmp_path / "metrics.md").read_text()
    assert table.count("\n") == 2 + len(sets) and "| shifted_3 |" in table
    # The in-memory path on the clean tensors: exact, no codec in between.
    clean = set_metrics(real["video"], real["audio"], spec, labels=real["label"])
    assert clean["event_f1_exact"] == 1.0 and clean["timing_error_ms"] == 0.0
    assert math.isnan(clean["onset_ratio"])  # no reference count given


def test_bad_settings_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match=r"clips \(1\) must be >= 2"):
        load_config(SyncEvalConfig, None, ["run_dir=x", "clips=1"])
    with pytest.raises(ValueError, match="flow .'raft'. must be one of"):
        load_config(SyncEvalConfig, None, ["run_dir=x", "flow=raft"])
    with pytest.raises(ValueError, match="shifts"):
        load_config(SyncEvalConfig, None, ["run_dir=x", "shifts=[0]"])


TINY = ["clips=2", "steps=2", "data.num_frames=8", "data.size=16", "data.n_mels=16", "shifts=[2]"]


@pytest.mark.parametrize("system, build, modes", [
    ("proav_dit", proav_pipeline, {"joint", "audio_to_video", "video_to_audio"}),
    ("av_dit", av_dit_pipeline, {"joint"}),
    ("read_a2v", read_pipeline, {"audio_to_video"}),
])
def test_each_system_evaluates_through_its_saved_pipeline(tmp_path, system, build, modes):
    build().save_pretrained(tmp_path / "run" / "pipeline")
    main = {"proav_dit": proav_eval, "av_dit": av_dit_eval, "read_a2v": read_eval}[system].main
    metrics = main([f"run_dir={tmp_path / 'run'}", *TINY])
    out = tmp_path / "run" / "sync_eval"
    saved = _strict_json(out / "metrics.json")
    assert saved["system"] == system and saved["clips"] == 2
    assert set(saved["sets"]) == modes | {"real", "shuffled", "shifted_2"}
    for mode in modes:
        assert len(list((out / mode).glob("clip_*.mp4"))) == 2
        assert 0.0 <= metrics["sets"][mode]["integrity"]["score"] <= 1.0
    assert metrics["sets"]["real"]["integrity"]["score"] == 1.0
    with pytest.raises(ValueError, match="set data.. to the run.s data"):  # a spec the pipeline does not make
        main([f"run_dir={tmp_path / 'run'}", "clips=2", "data.size=24"])
