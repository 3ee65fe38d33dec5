"""recipes.common.watch without training: when it validates and samples, and how a sample set
is written (whole or not at all)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from avblocks.pipelines import SoundingVideo
from recipes.common.data import DataConfig
from recipes.common.watch import Probes, Watch, write_samples

SPEC = DataConfig(num_frames=4, size=16).spec()


def clips(n: int, seed: int = 0) -> SoundingVideo:
    g = torch.Generator().manual_seed(seed)
    return SoundingVideo(torch.rand(n, 3, 4, 16, 16, generator=g) * 2 - 1,
                         0.1 * torch.randn(n, SPEC.num_samples, generator=g), SPEC)


def run_section(**fields) -> SimpleNamespace:
    return SimpleNamespace(**({"tensorboard": False, "eval_every": 0, "eval_clips": 2, "sample_every": 0,
                               "samples": 0, "seed": 0} | fields))


def test_a_sample_set_replaces_the_previous_one_whole(tmp_path):
    folder = tmp_path / "samples" / "step_000004"
    first = write_samples(folder, clips(2))
    assert [p.name for p in first] == ["clip_00.mp4", "clip_01.mp4", "contact_sheet.png"]
    assert all(p.stat().st_size > 1000 for p in first)
    before = {p.name: p.read_bytes() for p in first}

    class Broken:  # the preview fails after the mp4 files are written
        def save(self, path):
            return clips(2, seed=1).save(path)

        def preview(self, path):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_samples(folder, Broken())
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the old set, untouched
    assert sorted(p.name for p in folder.parent.iterdir()) == ["step_000004"]  # no temporary left
    second = write_samples(folder, clips(1, seed=2))  # a resumed run samples the step again
    assert sorted(p.name for p in folder.iterdir()) == ["clip.mp4", "contact_sheet.png"] == [p.name for p in second]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["step_000004"]


def test_validation_and_samples_come_at_their_steps_and_leave_the_random_stream(tmp_path):
    model = torch.nn.Linear(2, 2)
    seen = []

    def validation():
        seen.append(("validation", model.training, torch.rand(1).item()))
        return {"total": torch.tensor(0.5)}

    def samples():
        seen.append(("samples", model.training, None))
        return clips(1)

    run = run_section(eval_every=3, sample_every=4, samples=1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    log = (tmp_path / "log.jsonl").open("w")
    with Watch(run=run, out=tmp_path, is_main=True, model=model, probes=Probes(validation, samples),
               start=0, total=10, batch_size=2, sharded=False) as watch:
        for done in range(1, 11):
            watch.after_step(done, log)
        watch.finish(10, log)
    log.close()
    assert torch.equal(torch.rand(3), expected)  # the training stream is where it was
    assert model.training
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(e["step"], "validation" in e) for e in lines] == [
        (3, True), (4, False), (6, True), (8, False), (9, True), (10, True), (10, False)]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000004", "step_000008", "step_000010"]
    draws = [d for kind, _, d in seen if kind == "validation"]
    assert len(set(draws)) == 1  # reseeded each time: the same noise at every validation
    assert not any(training for _, training, _ in seen)  # probes see the model in eval mode


def test_a_run_stopped_early_samples_its_last_step_and_bad_fields_are_named(tmp_path):
    log = (tmp_path / "log.jsonl").open("w")
    with Watch(run=run_section(samples=1), out=tmp_path, is_main=True, model=torch.nn.Linear(1, 1),
               probes=Probes(samples=lambda: clips(1)), start=2, total=100, batch_size=1, sharded=False) as watch:
        for done in (3, 4, 5):
            watch.after_step(done, log)
        watch.finish(5, log)  # the time budget ran out at step 5
    log.close()
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["step_000005"]
    with pytest.raises(ValueError, match=r"run.eval_every \(-1\)"):
        Watch(run=run_section(eval_every=-1), out=tmp_path, is_main=True, model=torch.nn.Linear(1, 1),
              probes=None, start=0, total=1, batch_size=1, sharded=False)
    assert [json.loads(line)["step"] for line in Path(tmp_path / "log.jsonl").read_text().splitlines()] == [5]
