"""Data failures are counted and bounded: retried, substituted within limits, or the run stops.

Before: with ``data.folder`` moved away after step 10, every read failed, each file was marked
failed for good, and the run trained to the end on black, silent substitutes, exited 0 and
reported 51.6 dB PSNR; any ``OSError``, transient or not, blacklisted a file for good.
"""

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from media_factory import make_media

import avblocks.data.folder as folder_mod
from avblocks.data import DataError, VideoFolder
from recipes.common.data import ClipData, DataConfig

ROOT = Path(__file__).resolve().parents[1]
FPS, SR, T = 8, 16000, 8  # clips of 8 frames = 1 s


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Six 2-second files: twelve 1-second clips."""
    folder = tmp_path_factory.mktemp("videos")
    for k in range(6):
        make_media(folder / f"v{k}.mp4", num_frames=16, fps=FPS, sample_rate=SR, size=(16, 16), flash=k)
    return folder


def dataset(root: Path, cache: Path, **kw) -> VideoFolder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoFolder(root, num_frames=T, fps=FPS, size=(16, 16), sample_rate=SR, cache_dir=cache,
                           retry_delay=0.0, **kw)


def copy(videos: Path, dest: Path) -> Path:
    dest.mkdir()
    for p in videos.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


def test_a_transient_read_failure_is_retried_not_blacklisted(videos, tmp_path, monkeypatch):
    ds = dataset(videos, tmp_path)
    real, calls = folder_mod.read_clip, []

    def flaky(path, **kw):
        calls.append(path)
        if len(calls) <= 2:  # a network file system's hiccup: two failures, then fine
            raise OSError(5, "Input/output error")
        return real(path, **kw)

    monkeypatch.setattr(folder_mod, "read_clip", flaky)
    item = ds[0]
    assert len(calls) == 3 and item["path"] == ds.clips[0][0] and not item["substitute"]
    assert ds.failed == {} and ds.substitutions == 0


def test_a_file_that_read_before_and_fails_now_stops_the_reading(videos, tmp_path):
    root = copy(videos, tmp_path / "data")
    ds = dataset(root, tmp_path / "cache")
    first = ds[0]
    Path(first["path"]).unlink()  # gone under the run
    with pytest.raises(DataError, match=rf"{first['path']} read fine earlier and now fails after 3 "
                                        r"attempt\(s\).*the data changed under the run"):
        ds[0]


def test_failed_files_beyond_the_bound_stop_the_reading(videos, tmp_path):
    root = copy(videos, tmp_path / "data")
    ds = dataset(root, tmp_path / "cache", max_bad_fraction=0.2)  # 1 of 6 files may fail, not 2
    names = sorted({Path(p).name for p, _ in ds.clips})
    (root / names[0]).write_bytes(os.urandom(2000))  # damaged after indexing, never read
    with pytest.warns(UserWarning, match="failed at read time after 3 attempt"):
        item = ds[0]
    assert item["substitute"] and ds.substitutions == 1 and len(ds.failed) == 1
    assert item["path"] == str((root / names[1]).resolve())  # the next clip in index order
    (root / names[2]).write_bytes(b"")  # another one, not read yet
    with pytest.raises(DataError, match=r"2 of the 6 files of .* failed to read, more than "
                                        r"max_bad_fraction \(0.2\)"), pytest.warns(UserWarning):
        ds[4]


def test_a_batch_with_too_many_substitutes_stops(videos, tmp_path):
    data = ClipData(DataConfig(folder=str(videos), num_frames=T, fps=FPS, size=16, max_bad_fraction=0.25))
    batch = {"video": torch.zeros(4, 3, T, 16, 16), "audio": torch.zeros(4, 1, SR),
             "substitute": torch.tensor([True, False, False, False])}
    data.check_substitutes(batch)  # 1 of 4 is within 0.25
    batch["substitute"][1] = True
    with pytest.raises(DataError, match=r"2 of the 4 clips of a batch stand in for clips .* more than "
                                        r"data.max_bad_fraction \(0.25\)"):
        data.model_inputs(batch)


def test_evaluation_takes_as_many_folder_clips_as_asked(videos):
    data = ClipData(DataConfig(folder=str(videos), num_frames=T, fps=FPS, size=16))
    assert len(data.dataset) == 12 and len(data.held_out(4)) == 4 and len(data.held_out(40)) == 12


def test_data_vanishing_mid_run_stops_the_trainer(videos, tmp_path):
    root = copy(videos, tmp_path / "data")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "recipes.proav_dit.train_autoencoder", f"data.folder={root}",
         f"data.fps={FPS}", f"data.num_frames={T}", "data.size=16", "model.hidden_channels=16",
         "model.latent_channels=4", "model.depth=1", "model.heads=2", "model.groups=2",
         "optim.steps=500", "optim.warmup=1", "optim.batch_size=4", "run.log_every=1",
         "run.checkpoint_every=1000", "run.eval_clips=1", "run.progress=false", f"run.output_dir={out}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
             "XDG_CACHE_HOME": str(tmp_path / "cache")})
    log = out / "log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.is_file() and len(log.read_text().splitlines()) >= 4):  # every file was read by now
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    root.rename(tmp_path / "moved away")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0  # it stops instead of training on substitutes
    assert "DataError" in err and "read fine earlier and now fails" in err
    assert not (out / "model").exists() and not (out / "eval").exists()
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(len(steps))) and len(steps) < 500
    skipped = json.loads((out / "skipped_files.json").read_text())
    assert len(skipped) == 1  # it stopped at the first file that went bad, and says which
    assert next(iter(skipped.values())).startswith("failed at read time: ")


def test_substitutes_within_the_bound_are_counted_in_the_log_and_the_report(videos, tmp_path, monkeypatch):
    from recipes.proav_dit import train_autoencoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    broken = str((videos / "v2.mp4").resolve())
    real = folder_mod.read_clip

    def read_clip(path, **kw):
        if str(path) == broken:
            raise OSError(5, "Input/output error")
        return real(path, **kw)

    monkeypatch.setattr(folder_mod, "read_clip", read_clip)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="failed at read time"):
        train_autoencoder.main([
            f"data.folder={videos}", f"data.fps={FPS}", f"data.num_frames={T}", "data.size=16",
            "data.max_bad_fraction=0.5", "model.hidden_channels=16", "model.latent_channels=4",
            "model.depth=1", "model.heads=2", "model.groups=2", "optim.steps=6", "optim.warmup=1",
            "optim.batch_size=4", "run.log_every=1", "run.eval_clips=1", "run.progress=false",
            f"run.output_dir={out}"])
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    counted = [line for line in lines if "bad_files" in line]
    assert counted and all(line["bad_files"] == 1 and line["substituted_clips"] >= 1 for line in counted)
    skipped = json.loads((out / "skipped_files.json").read_text())
    assert skipped == {broken: "failed at read time: [Errno 5] Input/output error"}
