"""Recipe infrastructure: validated configs, exact batch order on resume, safe checkpoints."""

import pickle
import random
from dataclasses import dataclass, field

import pytest
import torch

from avblocks.config import ConfigError
from recipes.common import (
    CheckpointManager,
    StepBatchSampler,
    capture_rng,
    load_config,
    restore_rng,
    warmup_cosine,
)


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class Run:
    steps: int = 10
    name: str = "tiny"
    optim: Optim = field(default_factory=Optim)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.5\n")
    config = load_config(Run, path, ["optim.lr=1e-3", "optim.betas=[0.8, 0.9]", "name=big"])
    assert config == Run(steps=20, name="big", optim=Optim(lr=1e-3, betas=(0.8, 0.9)))


@pytest.mark.parametrize(
    "override, named",
    [("optim.momentum=0.9", "momentum"), ("stepz=3", "stepz"), ("steps=many", "steps")],
)
def test_bad_overrides_name_the_key(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config(Run, None, [override])


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Run, None, ["steps"])


def test_a_missing_config_file_is_named_and_a_bare_name_points_at_the_command(tmp_path):
    with pytest.raises(ConfigError, match=r"pretrain_tiny does not exist \(a shipped config by name: avblocks run"):
        load_config(Run, "pretrain_tiny")
    with pytest.raises(ConfigError, match=r"gone\.yaml does not exist$"):
        load_config(Run, tmp_path / "gone.yaml")


def test_batches_cover_each_epoch_once_and_resume_exactly():
    full = StepBatchSampler(num_items=10, batch_size=3, total_steps=9, seed=5)
    batches = list(full)
    assert all(len(b) == 3 for b in batches)
    for epoch in range(3):  # 3 full batches per epoch, no item twice within an epoch
        items = sum(batches[3 * epoch : 3 * epoch + 3], [])
        assert len(set(items)) == 9
    assert batches[:3] != batches[3:6]  # epochs are reshuffled
    resumed = StepBatchSampler(num_items=10, batch_size=3, total_steps=9, seed=5, start_step=4)
    assert list(resumed) == batches[4:]


def test_warmup_cosine_shape():
    lr = [warmup_cosine(s, warmup=4, total=20, min_ratio=0.1) for s in range(25)]
    assert lr[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lr[4] == pytest.approx(1.0) and lr[20] == pytest.approx(0.1) and lr[24] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lr[4:], lr[5:]))


def test_checkpoint_round_trip_keeps_last_k_and_rng(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    model = torch.nn.Linear(3, 2)
    for step in (10, 20, 30):
        random.seed(step)
        torch.manual_seed(step)
        manager.save(step, {"model": model.state_dict(), "rng": capture_rng()})
    assert [p.name for p in manager.checkpoints()] == ["step_00000020.pt", "step_00000030.pt"]
    expected = (torch.rand(3), random.random())
    state = manager.load_latest()
    assert state["step"] == 30
    torch.testing.assert_close(state["model"]["weight"], model.weight.detach())
    restore_rng(state["rng"])
    again = (torch.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1]


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"model": {"w": torch.ones(2)}})

    def broken_save(obj, f):
        with open(f, "wb") as handle:
            handle.write(b"half a checkp")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        manager.save(2, {"model": {"w": torch.zeros(2)}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001.pt", "step_00000001.pt.sha256"]
    assert torch.equal(manager.load_latest()["model"]["w"], torch.ones(2))


def test_non_finite_weights_are_never_written(tmp_path):
    manager = CheckpointManager(tmp_path)
    with pytest.raises(FloatingPointError, match=r"model\.w"):
        manager.save(1, {"model": {"w": torch.tensor([1.0, float("nan")])}})
    assert manager.checkpoints() == []


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    (tmp_path / "step_00000005.pt").write_bytes(pickle.dumps({"model": _Exploit()}))
    with pytest.raises(pickle.UnpicklingError):
        CheckpointManager(tmp_path).load_latest()
