"""Data parallelism on the CPU with two real gloo processes: DDP and FSDP2 match one process.

The 2-process runs are spawned once per module (``torch.multiprocessing``, spawn start method,
process group from the same environment variables ``torchrun`` sets) and write what they end
with to a folder; the tests compare that against a single-process run on the same global
batches, computed here with plain PyTorch and no distributed helper in the loop.
"""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

from avblocks.diffusion.ema import EMA
from avblocks.dit.blocks import STDiTBlock
from avblocks.dit.stdit import STDiT
from recipes.common import StepBatchSampler
from recipes.common import distributed as D

WORLD, STEPS, ACCUM, GLOBAL_BATCH, ITEMS = 2, 3, 2, 8, 16
# float64: AdamW divides by sqrt(v), which blows float32 round-off of near-zero gradients up to
# ~3e-5 relative after 3 steps (measured); in float64 the same comparison holds to 1e-6
# and a real mismatch (a wrong slice, a missing 1/k) still shows as > 1e-2.
DTYPE = torch.float64
TOL = 1e-6


def tiny_model() -> STDiT:
    torch.manual_seed(0)
    return STDiT(in_channels=4, side=4, frames=6, patch=2, hidden_size=32, depth=2, num_heads=2,
                 num_classes=3, class_dropout=0.0).to(DTYPE)


def dataset() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(ITEMS, 4, 6, 4, 4, generator=g, dtype=DTYPE)
    t = torch.rand(ITEMS, 6, generator=g, dtype=DTYPE)
    y = torch.randint(0, 3, (ITEMS,), generator=g)
    target = torch.randn(ITEMS, 4, 6, 4, 4, generator=g, dtype=DTYPE)
    return x, t, y, target


def loss_on(model, data, index: list[int]) -> torch.Tensor:
    x, t, y, target = data
    return (model(x[index], t[index], y[index]) - target[index]).square().mean()


def optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)


def sampler() -> StepBatchSampler:
    return StepBatchSampler(num_items=ITEMS, batch_size=GLOBAL_BATCH, total_steps=STEPS, seed=7)


def train_distributed(model, ctx: D.DistContext, data, opt) -> None:
    """The loop a trainer runs: rank slice of the global batch, micro-batches, sync on last."""
    batches = D.ShardedBatchSampler(sampler(), rank=ctx.rank, world_size=ctx.world_size)
    for index in batches:
        micro = D.split_micro_batches(index, ACCUM)
        for i, part in enumerate(micro):
            with D.gradient_sync(model, enabled=i == len(micro) - 1):
                (loss_on(model, data, part) / len(micro)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from torch.distributed.checkpoint.state_dict import get_state_dict

    out_dir = Path(out)
    ctx = D.init_distributed()
    assert ctx.enabled and ctx.world_size == WORLD and ctx.rank == rank
    data = dataset()
    # DDP
    ddp = D.wrap_model(tiny_model(), ctx, "ddp")
    opt = optimizer(D.unwrap(ddp))
    train_distributed(ddp, ctx, data, opt)
    torch.save(D.unwrap(ddp).state_dict(), out_dir / f"ddp_rank{rank}.pt")
    if ctx.is_main:  # rank-0-only writes
        (out_dir / "main_wrote_this").write_text(str(rank))
    torch.manual_seed(D.rank_seed(0, ctx.rank))
    torch.save(torch.rand(4), out_dir / f"noise_rank{rank}.pt")
    mean = D.all_reduce_mean(torch.tensor([float(rank)]))
    flags = (D.any_rank(rank == 1), D.any_rank(False))
    torch.save({"mean": mean, "flags": flags}, out_dir / f"collectives_rank{rank}.pt")
    # FSDP2
    fsdp = D.wrap_model(tiny_model(), ctx, "fsdp", shard=(STDiTBlock,))
    assert D.is_fsdp(fsdp)
    local = next(fsdp.parameters())
    assert local.to_local().numel() < local.numel()  # really sharded
    opt = optimizer(fsdp)
    train_distributed(fsdp, ctx, data, opt)
    full = D.full_model_state(fsdp)
    if ctx.is_main:
        torch.save(full, out_dir / "fsdp_full.pt")
    model_state, optim_state = get_state_dict(fsdp, opt)
    D.save_sharded(out_dir / "sharded", STEPS, {"model": model_state, "optim": optim_state}, keep=1)
    # the trainers' path: EMA (DTensor shadows), scheduler and per-rank RNG in one DCP folder
    ema = EMA(fsdp, decay=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    sched.step()
    parts = {"model": fsdp, "optimizer": opt, "ema": ema, "scheduler": sched}
    store = D.TrainCheckpoints(out_dir / "train", keep=2, ctx=ctx, sharded=True)
    torch.save(torch.get_rng_state(), out_dir / f"rng_at_save_rank{rank}.pt")
    assert store.save(STEPS, parts) is None
    if rank == 1:  # one bad shard on one rank: both ranks refuse, nothing is written
        with torch.no_grad():
            next(fsdp.parameters()).to_local().view(-1)[0] = float("nan")
    refused = store.save(STEPS + 1, parts)
    torch.save({"refused": refused}, out_dir / f"refused_rank{rank}.pt")
    D.barrier()
    D.destroy_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True,
                       start_method="spawn")
    return out


@pytest.fixture(scope="module")
def single_process() -> dict[str, torch.Tensor]:
    """Reference: one process, the whole global batch per step, no accumulation, no helpers."""
    model, data = tiny_model(), dataset()
    opt = optimizer(model)
    for index in sampler():
        loss_on(model, data, index).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()} | {
        "_optimizer": opt.state_dict()}


def max_rel_diff(a: dict, b: dict) -> float:
    b = {k: v for k, v in b.items() if k != "_optimizer"}
    assert a.keys() == b.keys()
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)).item()
               for k in a if b[k].is_floating_point())


def test_ddp_two_ranks_with_accumulation_match_one_process(two_ranks, single_process):
    init = tiny_model().state_dict()
    ranks = [torch.load(two_ranks / f"ddp_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # replicas in sync
    assert max_rel_diff(ranks[0], single_process) < TOL
    # and training moved the weights far more than that tolerance
    assert max_rel_diff(init, single_process) > 1e-2


def test_fsdp2_two_ranks_match_one_process(two_ranks, single_process):
    full = torch.load(two_ranks / "fsdp_full.pt", weights_only=True)
    assert max_rel_diff(full, single_process) < TOL


def test_fsdp2_sharded_checkpoint_saved_on_two_ranks_loads_on_one(two_ranks, single_process):
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    folder = D.latest_sharded(two_ranks / "sharded")
    assert folder is not None and folder.name == f"step_{STEPS:08d}.dcp"
    assert sorted(p.name for p in folder.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not list((two_ranks / "sharded").glob(".*tmp"))  # no temporary left behind
    model = STDiT(in_channels=4, side=4, frames=6, patch=2, hidden_size=32, depth=2, num_heads=2,
                  num_classes=3, class_dropout=0.0).to(DTYPE)  # a different random init, overwritten
    opt = optimizer(model)
    model_state, optim_state = get_state_dict(model, opt)
    state = D.load_sharded(folder, {"model": model_state, "optim": optim_state, "step": -1})
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    full = torch.load(two_ranks / "fsdp_full.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], full[k]) for k in full)
    assert state["step"] == STEPS
    # the optimizer state came along and matches the single-process optimizer's moments
    loaded, reference = opt.state_dict()["state"], single_process["_optimizer"]["state"]
    assert loaded.keys() == reference.keys() and len(loaded) == len(list(model.parameters()))
    for i in reference:
        assert float(loaded[i]["step"]) == STEPS
        for key in ("exp_avg", "exp_avg_sq"):
            scale = reference[i][key].abs().max().clamp(min=1e-12)
            assert ((loaded[i][key] - reference[i][key]).abs().max() / scale).item() < 1e-4


def test_trainer_checkpoints_sharded_on_two_ranks_restore_on_one(two_ranks):
    full = torch.load(two_ranks / "fsdp_full.pt", weights_only=True)
    assert [p.name for p in D.sharded_checkpoints(two_ranks / "train")] == [f"step_{STEPS:08d}.dcp"]
    for r in range(WORLD):  # the non-finite shard on rank 1 was refused on both ranks
        refused = torch.load(two_ranks / f"refused_rank{r}.pt", weights_only=True)["refused"]
        assert refused == ("a tensor on another rank" if r == 0 else "model.plane_embed")
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    opt = optimizer(model)
    ema = EMA(model, decay=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    parts = {"model": model, "optimizer": opt, "ema": ema, "scheduler": sched}
    store = D.TrainCheckpoints(two_ranks / "train", keep=2, ctx=D.DistContext(), sharded=True)
    assert store.restore(parts) == STEPS
    assert all(torch.equal(model.state_dict()[k], full[k]) for k in full)
    assert all(torch.equal(ema.shadow[k], full[k]) for k in ema.shadow)  # gathered shards
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 2)
    assert torch.equal(torch.get_rng_state(),
                       torch.load(two_ranks / "rng_at_save_rank0.pt", weights_only=True))


def test_rank0_only_writes_and_collectives(two_ranks):
    assert (two_ranks / "main_wrote_this").read_text() == "0"
    noise = [torch.load(two_ranks / f"noise_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert not torch.equal(noise[0], noise[1])  # per-rank seeding: different streams
    torch.manual_seed(0)
    assert torch.equal(noise[0], torch.rand(4))  # rank 0 keeps the run's own seed
    for r in range(WORLD):
        c = torch.load(two_ranks / f"collectives_rank{r}.pt", weights_only=True)
        assert c["mean"].item() == pytest.approx(0.5)
        assert c["flags"] == (True, False)


def test_gradient_accumulation_equals_one_big_batch():
    """One process: k micro-batches of b/k (loss scaled 1/k) == one batch of b, over N steps."""
    data = dataset()
    big, acc = tiny_model(), tiny_model()
    opt_big, opt_acc = optimizer(big), optimizer(acc)
    ctx = D.DistContext()
    for index in sampler():
        loss_on(big, data, index).backward()
        opt_big.step()
        opt_big.zero_grad()
    for index in D.ShardedBatchSampler(sampler(), rank=ctx.rank, world_size=ctx.world_size):
        micro = D.split_micro_batches(index, 4)
        for part in micro:
            (loss_on(acc, data, part) / 4).backward()
        opt_acc.step()
        opt_acc.zero_grad()
    assert max_rel_diff(acc.state_dict(), big.state_dict()) < TOL


@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 40))
def test_rank_slices_partition_the_global_batch(world, per_rank, step):
    s = StepBatchSampler(num_items=50, batch_size=world * per_rank, total_steps=41, seed=3)
    parts = [D.shard_indices(s.batch(step), r, world) for r in range(world)]
    assert sum(parts, []) == s.batch(step)  # disjoint, in order, complete
    sharded = [list(D.ShardedBatchSampler(s, rank=r, world_size=world)) for r in range(world)]
    assert [sh[step] for sh in sharded] == parts


def test_batch_split_errors_name_the_sizes():
    with pytest.raises(ValueError, match=r"global batch size \(6\).*ranks \(4\)"):
        D.shard_indices(list(range(6)), 0, 4)
    with pytest.raises(ValueError, match=r"batch of 6 .* 4 equal micro-batches"):
        D.split_micro_batches(list(range(6)), 4)
    with pytest.raises(ValueError, match="rank"):
        D.shard_indices(list(range(6)), 2, 2)


def test_single_process_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = D.init_distributed()
    assert ctx == D.DistContext() and not ctx.enabled and ctx.is_main
    model = torch.nn.Linear(2, 2)
    assert D.wrap_model(model, ctx, "ddp") is model and D.unwrap(model) is model
    assert D.any_rank(True) and not D.any_rank(False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        D.init_distributed()
    assert D.rank_seed(5, 0) == 5 and D.rank_seed(0, 1) != D.rank_seed(1, 0)


# ------------------------------------------------------------------------------------------
# The real trainers under torchrun (slow: two torchrun launches per test)
# ------------------------------------------------------------------------------------------

AE_TINY = ["data.num_clips=8", "data.num_frames=8", "data.size=16", "model.hidden_channels=16",
           "model.latent_channels=4", "model.depth=1", "model.heads=2", "model.groups=2",
           "optim.steps=4", "optim.batch_size=4", "optim.grad_accum=2", "optim.warmup=1",
           "run.checkpoint_every=2", "run.log_every=1", "run.eval_clips=1", "run.progress=false"]


def torchrun(out: Path, *extra: str) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(WORLD), "-m", "recipes.proav_dit.train_autoencoder",
                    *AE_TINY, f"run.output_dir={out}", *extra],
                   cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True,
                   capture_output=True, timeout=600)


def logged(out: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_autoencoder_trainer_under_torchrun_ddp_and_fsdp(tmp_path):
    from avblocks.latent.mdsa import MDSA

    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    torchrun(ddp, "run.parallel=ddp")
    torchrun(fsdp, "run.parallel=fsdp")
    # rank 0 alone logs: one line per step, each the mean over both ranks
    assert [e["step"] for e in logged(ddp)] == [0, 1, 2, 3]
    for a, b in zip(logged(ddp), logged(fsdp), strict=True):  # same math, other engine
        assert a["total"] == pytest.approx(b["total"], rel=1e-4)
    assert sorted(p.name for p in (ddp / "checkpoints").glob("step_*.pt")) == [
        "step_00000002.pt", "step_00000004.pt"]
    assert sorted(p.name for p in (fsdp / "checkpoints").glob("step_*.dcp")) == [
        "step_00000002.dcp", "step_00000004.dcp"]
    assert all((p / "checksums.json").is_file() for p in (fsdp / "checkpoints").glob("step_*.dcp"))
    assert not (ddp / "run.lock").exists() and not (fsdp / "run.lock").exists()  # rank 0 released it
    state = torch.load(ddp / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert len(state["rng_ranks"]) == WORLD
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])
    a = MDSA.from_pretrained(ddp / "model").state_dict()
    b = MDSA.from_pretrained(fsdp / "model").state_dict()  # gathered from the shards
    assert max_rel_diff(b, a) < 1e-3
    # exact resume under FSDP2: drop the last sharded checkpoint, run again
    import shutil

    shutil.rmtree(fsdp / "checkpoints" / "step_00000004.dcp")
    first = logged(fsdp)
    torchrun(fsdp, "run.parallel=fsdp")
    again = logged(fsdp)
    assert again[:4] == first and again[4:] == first[2:]
