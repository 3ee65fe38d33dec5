"""Data that keeps a GPU busy: loader workers give exactly the batches (and so the losses) of
no workers, every batch is a pure function of (seed, step), and the latent cache is written
in shards and read memory-mapped."""

import json
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from media_factory import make_media
from torch.utils.data import Dataset

from avblocks.data import VideoFolder
from recipes.common.distributed import DistContext
from recipes.common.latent_cache import INDEX, RowsDataset, ShardedRows, open_shards, write_shards
from recipes.common.loading import batch_seed, step_loader
from recipes.common.schedule import StepBatchSampler
from recipes.proav_dit import train_autoencoder, train_dit

AE = ["data.num_clips=8", "data.num_frames=8", "data.size=16", "model.hidden_channels=16",
      "model.latent_channels=4", "model.depth=1", "model.heads=2", "model.groups=2",
      "optim.steps=4", "optim.batch_size=2", "optim.warmup=1", "run.checkpoint_every=2",
      "run.log_every=1", "run.eval_clips=2", "run.progress=false"]
DIT = ["model.hidden_size=32", "model.depth=1", "model.num_heads=2", "optim.steps=4",
       "optim.batch_size=4", "optim.warmup=1", "run.checkpoint_every=2", "run.log_every=1",
       "run.progress=false", "data.shard_clips=3"]


class NoisyItems(Dataset):
    """Items drawn from the global RNGs (as a dataset with random augmentations would)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.rand(3) + i, "py": torch.tensor(random.random()),
                "np": torch.tensor(np.random.rand())}


def batches(loader) -> list[dict]:
    return [dict(b) for b in loader]


def equal(x, y) -> bool:
    return torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y  # tensors, or a folder's file names


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def test_workers_give_the_batches_of_no_workers_and_resume_mid_run():
    data = NoisyItems()
    plain = batches(step_loader(data, batch_size=4, total_steps=6, start_step=0, seed=3))
    assert same(batches(step_loader(data, batch_size=4, total_steps=6, start_step=0, seed=3, num_workers=2)), plain)
    # a run resumed at step 4 sees the batches of steps 4 and 5 exactly, with or without workers
    for workers in (0, 2):
        resumed = batches(step_loader(data, batch_size=4, total_steps=6, start_step=4, seed=3, num_workers=workers))
        assert same(resumed, plain[4:])
    # and the seed matters: another seed draws other items
    assert not same(batches(step_loader(data, batch_size=4, total_steps=6, start_step=0, seed=4)), plain)


def test_a_batch_is_a_function_of_seed_and_step_only():
    data = NoisyItems()
    loaded = batches(step_loader(data, batch_size=4, total_steps=3, start_step=0, seed=3))
    order = StepBatchSampler(num_items=12, batch_size=4, total_steps=3, seed=3)
    for step, batch in enumerate(loaded):
        torch.manual_seed(batch_seed(3, step))  # the items of a step draw, in order, from its seed
        assert torch.equal(batch["x"], torch.stack([torch.rand(3) + index for index in order.batch(step)]))
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    batches(step_loader(data, batch_size=4, total_steps=3, start_step=0, seed=3))
    after = torch.get_rng_state(), random.getstate(), np.random.get_state()[1]
    assert torch.equal(after[0], before[0]) and after[1] == before[1] and (after[2] == before[2]).all()


def test_a_media_folder_decodes_in_workers_to_the_batches_of_no_workers(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for i, flash in enumerate((3, 9)):
        make_media(media / f"clip{i}.mp4", num_frames=16, flash=flash, beep_t=Fraction(flash, 25))
    folder = VideoFolder(media, num_frames=4, fps=25, size=(16, 16), sample_rate=16000, cache_dir=tmp_path / "index")
    plain = batches(step_loader(folder, batch_size=3, total_steps=3, start_step=0, seed=5))
    assert len(folder) > 3 and not torch.equal(plain[0]["video"][0], plain[0]["video"][1])  # distinct clips
    assert same(batches(step_loader(folder, batch_size=3, total_steps=3, start_step=0, seed=5, num_workers=2)), plain)


class Indexed(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.tensor(float(i))}


def test_ranks_take_their_slices_of_each_step():
    whole = batches(step_loader(Indexed(), batch_size=4, total_steps=2, start_step=0, seed=1))
    parts = [batches(step_loader(Indexed(), batch_size=4, total_steps=2, start_step=0, seed=1,
                                 ctx=DistContext(rank=r, world_size=2))) for r in range(2)]
    for step in range(2):
        assert torch.equal(torch.cat([parts[0][step]["x"], parts[1][step]["x"]]), whole[step]["x"])


def logged(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_autoencoder_with_two_workers_logs_the_losses_of_none(tmp_path):
    train_autoencoder.main([*AE, f"run.output_dir={tmp_path / 'w0'}"])
    train_autoencoder.main([*AE, f"run.output_dir={tmp_path / 'w2'}", "data.num_workers=2"])
    assert logged(tmp_path / "w2") == logged(tmp_path / "w0")
    a = torch.load(tmp_path / "w0" / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "w2" / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_denoiser_reads_sharded_latents_with_workers_and_logs_the_same_losses(tmp_path):
    ae = tmp_path / "ae"
    train_autoencoder.main([*AE, f"run.output_dir={ae}", "optim.steps=2"])
    train_dit.main([*DIT, f"autoencoder={ae}", f"run.output_dir={tmp_path / 'w0'}"])
    folders = [p for p in (ae / "latents").iterdir() if p.is_dir()]
    assert len(folders) == 1 and sorted(p.name for p in folders[0].glob("shard_*.pt")) == [
        "shard_00000.pt", "shard_00001.pt", "shard_00002.pt"]  # 8 clips, 3 per shard
    train_dit.main([*DIT, f"autoencoder={ae}", f"run.output_dir={tmp_path / 'w2'}", "data.num_workers=2"])
    assert logged(tmp_path / "w2") == logged(tmp_path / "w0")


def mapped_files() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "/" in line}


def test_the_cache_is_written_in_shards_and_read_memory_mapped(tmp_path):
    g = torch.Generator().manual_seed(0)
    latents, labels = torch.randn(10, 2, 3, generator=g), torch.arange(10)
    chunks = [{"latents": latents[i:i + 4], "labels": labels[i:i + 4]} for i in range(0, 10, 4)]
    folder = write_shards(tmp_path / "cache", chunks, shard_rows=3)
    assert json.loads((folder / INDEX).read_text())["rows"] == [3, 3, 3, 1]
    cache = open_shards(folder)
    rows = cache["latents"]
    assert isinstance(rows, ShardedRows) and rows.shape == (10, 2, 3) and len(cache["labels"]) == 10
    assert torch.equal(rows[:], latents) and torch.equal(cache["labels"][:], labels)
    pick = [9, 0, 4, 4, 7]
    assert torch.equal(rows[pick], latents[pick]) and torch.equal(rows[5], latents[5])
    with pytest.raises(IndexError, match="out of range for 10 rows"):
        rows[[10]]
    # memory-mapped: the shard files are mapped into this process, not read into it
    assert {str(folder / f"shard_0000{i}.pt") for i in range(4)} <= mapped_files()
    item = RowsDataset(cache)[7]
    assert torch.equal(item["latents"], latents[7]) and int(item["labels"]) == 7


def test_an_interrupted_cache_write_leaves_no_cache(tmp_path):
    def failing():
        yield {"latents": torch.zeros(4, 2)}
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError, match="encoder crashed"):
        write_shards(tmp_path / "cache", failing(), shard_rows=2)
    assert open_shards(tmp_path / "cache") is None and not (tmp_path / "cache").exists()
    write_shards(tmp_path / "cache", [{"latents": torch.ones(3, 2)}], shard_rows=2)  # a rerun cleans up
    assert torch.equal(open_shards(tmp_path / "cache")["latents"][:], torch.ones(3, 2))
    assert not (tmp_path / ".cache.tmp").exists()
    with pytest.raises(ValueError, match="different lengths"):
        write_shards(tmp_path / "bad", [{"latents": torch.ones(3, 2), "labels": torch.ones(2)}])
