"""The GPU check: every recipe trains and samples on CUDA, on one GPU or many, and how fast.

    make gpu-check                               # = python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --out DIR     # also writes DIR/gpu_check.json and .md

Without CUDA it says so and exits 0 (CI stays CPU-only); ``--device cpu`` runs the same
plumbing on the CPU at small sizes instead (gloo for the process group, no FlexAttention
backward), which is how it is tested where there is no GPU. On CUDA (about 7 minutes on one
H200, each section timed in the table):

1. **matmul**: the bf16 rate of 8192^3 matrix products (median of 10 after 3 warm-ups, CUDA
   events): the ceiling the training step is measured against.
2. **recipes**: each recipe's tiny config through its real entry points with ``run.device``:
   a few training steps in fp32 and bf16 (eager), and bf16 compiled (``model.compile``) for
   each denoiser; then sampling through the saved pipeline folder in fp32, with the weights
   loaded in bf16, and with the denoiser's blocks compiled. Checked: every loss finite, bf16
   and compiled runs close to fp32 / eager at the first step (same noise: same device
   stream), samples finite, of the spec's shape, and close to the fp32 sample.
3. **torchrun**: DDP and FSDP2 through ``torch.distributed.run`` over all visible GPUs and
   NCCL (one GPU: world size 1, still NCCL), with the project's own device arguments
   (:func:`~recipes.common.distributed.ddp_arguments`, :func:`~recipes.common.distributed.fsdp_plan`),
   3 steps of a tiny ST-DiT on global batches cut across ranks with accumulation, fp32 and
   bf16: the step losses and final weights against one process. With 2 or more GPUs the
   autoencoder trainer itself runs under torchrun with DDP and with FSDP2 (bf16) too.
4. **flex**: FlexAttention forward and backward equal to SDPA (a sliding-tile mask and no
   mask; bf16 and fp32).
5. **throughput**: the ST-DiT-B training step at the 256 preset (``dit_256_B``: 6 x 256
   tokens, bf16 autocast, AdamW), eager and compiled: ms per step, achieved TFLOP/s (FLOPs of
   the formula in ``benchmarks/paper_size.py``, which the FLOP counter confirms to 0.3 %)
   against the matmul rate (target >= 40 %), peak memory.
6. **sampling**: one 16-frame 256x256 clip from a ProAV-DiT pipeline at the 256 preset
   (random weights: the time does not depend on them), 25 Heun steps then the decode, fp32
   and bf16 weights (target < 2 s).

It prints one table; the exit status is 1 when any correctness check failed (speed targets
are reported, never failed on).
"""

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from avblocks.device import is_cuda, process_group_backend, resolve_device  # noqa: E402

TINY = {
    "proav_ae": ["data.num_clips=8", "data.num_frames=8", "data.size=16", "model.hidden_channels=16",
                 "model.latent_channels=4", "model.depth=1", "model.heads=2", "model.groups=2",
                 "optim.steps=3", "optim.batch_size=4", "optim.warmup=1", "run.eval_clips=2",
                 "run.progress=false", "run.log_every=1"],
    "proav_dit": ["model.hidden_size=64", "model.depth=2", "model.num_heads=2", "optim.steps=3",
                  "optim.batch_size=8", "optim.warmup=1", "run.log_every=1", "run.progress=false"],
    "av_ae": ["data.num_clips=8", "data.num_frames=4", "data.size=16", "run.progress=false", "audio_images=2",
              "model.hidden_channels=8", "model.depth=1", "model.groups=2", "optim.steps=2",
              "optim.batch_size=2", "optim.warmup=1", "run.eval_clips=2", "run.log_every=1"],
    "av_pre": ["model.hidden_size=32", "model.depth=2", "model.num_heads=2", "optim.steps=2",
               "optim.batch_size=4", "optim.warmup=1", "run.progress=false", "run.log_every=1"],
    "av_dit": ["optim.steps=3", "optim.batch_size=4", "optim.warmup=1", "run.log_every=1",
               "run.progress=false", "model.lora_rank=2", "model.fusion_every=1"],
    "read": ["--config", str(ROOT / "recipes" / "read_a2v" / "configs" / "test.yaml"), "run.log_every=1",
             "model.depth=2"],  # two blocks: a repeated stack to compile
}


# ------------------------------------------------------------------ the table


class Table:
    def __init__(self):
        self.rows: list[dict] = []
        self.failed = False

    def add(self, section: str, check: str, value: str, expected: str = "", status: str = "ok") -> None:
        self.rows.append({"section": section, "check": check, "value": value, "expected": expected,
                          "status": status})
        self.failed |= status == "FAIL"
        print(f"[{section}] {check}: {value} {('(' + expected + ')') if expected else ''} {status}", flush=True)

    def check(self, section: str, check: str, value: float, limit: float, fmt: str = "{:.2e}") -> bool:
        ok = math.isfinite(value) and value <= limit
        self.add(section, check, fmt.format(value), f"<= {fmt.format(limit)}", "ok" if ok else "FAIL")
        return ok

    def markdown(self) -> str:
        lines = ["| section | check | value | expected | status |", "|---|---|---|---|---|"]
        lines += [f"| {r['section']} | {r['check']} | {r['value']} | {r['expected']} | {r['status']} |"
                  for r in self.rows]
        return "\n".join(lines) + "\n"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` (L2, float32 on the CPU)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def synchronize(device: torch.device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def section(table: Table, name: str, device: torch.device):
    """Time a section, report its peak memory, and turn an exception into one FAIL row."""
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)
    began = time.monotonic()
    try:
        yield
    except Exception as error:  # noqa: BLE001 (one failing section must not hide the others)
        traceback.print_exc()
        table.add(name, "section raised", f"{type(error).__name__}: {str(error).splitlines()[0][:160]}",
                  "no exception", "FAIL")
    peak = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if is_cuda(device) else ""
    table.add(name, "wall time", f"{time.monotonic() - began:.1f} s{peak}", "", "info")


# ------------------------------------------------------------------ 1. matmul


def matmul_rate(device: torch.device, n: int) -> float:
    """bf16 TFLOP/s of ``n^3`` products on random data (CPU: wall clock, small ``n``)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(13):
        synchronize(device)
        if is_cuda(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            began = time.perf_counter()
            a @ b
            seconds = time.perf_counter() - began
        if i >= 3:
            times.append(seconds)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e12


# ------------------------------------------------------------------ 2. recipes


def logged(folder: Path) -> list[float]:
    return [json.loads(line)["total"] for line in (folder / "log.jsonl").read_text().splitlines()
            if "total" in json.loads(line)]


def train_variants(table: Table, name: str, main, base: list[str], out: Path, device: torch.device,
                   compiled: bool, log: str = ".") -> dict[str, Path]:
    """fp32 and bf16 eager (and bf16 compiled) runs of one trainer; checks their losses
    (``log``: the folder of the run that holds the log.jsonl to compare)."""
    variants = {"fp32": ["optim.precision=fp32"], "bf16": ["optim.precision=bf16"]}
    if compiled:
        variants["bf16 compiled"] = ["optim.precision=bf16", "model.compile=true"]
    folders, losses = {}, {}
    for label, extra in variants.items():
        folder = out / f"{name}_{label.replace(' ', '_')}"
        main([*base, f"run.output_dir={folder}", f"run.device={device}", *extra])
        torch._dynamo.reset()
        folders[label] = folder
        losses[label] = logged(folder / log)
        finite = all(math.isfinite(v) for v in losses[label]) and losses[label]
        table.add("recipes", f"{name} {label}: losses", " ".join(f"{v:.4f}" for v in losses[label]), "finite",
                  "ok" if finite else "FAIL")
    # a denoiser's first loss is the same in any precision (its zero-initialised output
    # layer predicts 0): every step is compared
    table.check("recipes", f"{name} bf16 vs fp32, every loss (max rel)",
                max(abs(a - b) / abs(b) for a, b in zip(losses["bf16"], losses["fp32"], strict=True)), 5e-2)
    if compiled:
        eager = losses["bf16"]
        table.check("recipes", f"{name} compiled vs eager bf16, every loss (rel)",
                    max(abs(a - b) / abs(b) for a, b in zip(losses["bf16 compiled"], eager, strict=True)), 5e-2)
    return folders


def sample_variants(table: Table, name: str, folder: Path, device: torch.device, call, compiled: bool) -> None:
    """Sample a saved pipeline folder in fp32, with bf16 weights and (``compiled``) with compiled blocks."""
    from avblocks.dit.compile import compile_blocks
    from avblocks.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(folder, device=device)
    reference = call(pipe)
    spec = pipe.spec
    shape_ok = tuple(reference.video.shape[-2:]) == tuple(spec.size) and reference.video.shape[1] == 3
    finite = bool(torch.isfinite(reference.video).all() and torch.isfinite(reference.audio).all())
    table.add("recipes", f"{name} sample fp32", f"video {tuple(reference.video.shape)}, audio "
              f"{tuple(reference.audio.shape)}", "finite, spec's frame size", "ok" if shape_ok and finite else "FAIL")
    half = call(Pipeline.from_pretrained(folder, device=device, dtype=torch.bfloat16))
    table.check("recipes", f"{name} sample, bf16 weights vs fp32 (video rel L2)", rel(half.video, reference.video), 0.15)
    if not compiled:  # --skip compile
        return
    compiled = Pipeline.from_pretrained(folder, device=device)
    compile_blocks(compiled.denoiser)
    out = call(compiled)
    torch._dynamo.reset()
    table.check("recipes", f"{name} sample, compiled vs eager (video rel L2)", rel(out.video, reference.video), 2e-2)


def recipes(table: Table, device: torch.device, out: Path, compiled: bool) -> None:
    from recipes.av_dit import pretrain
    from recipes.av_dit import train as av_train
    from recipes.av_dit import train_autoencoder as av_autoencoder
    from recipes.proav_dit import train_autoencoder, train_dit
    from recipes.read_a2v import train as read_train

    ae = train_variants(table, "proav autoencoder", train_autoencoder.main, TINY["proav_ae"], out, device, False)
    dit = train_variants(table, "proav ST-DiT", train_dit.main, [*TINY["proav_dit"], f"autoencoder={ae['fp32']}"],
                         out, device, compiled)
    sample_variants(table, "proav", dit["fp32"] / "pipeline", device,
                    lambda pipe: pipe(labels=[0, 1], steps=3, seed=0, progress=False), compiled)

    av_ae = train_variants(table, "av_dit autoencoder", av_autoencoder.main, TINY["av_ae"], out, device, False)
    pre = out / "av_pretrain"
    pretrain.main([*TINY["av_pre"], f"autoencoder={av_ae['fp32']}", f"run.output_dir={pre}", f"run.device={device}"])
    av = train_variants(table, "av_dit adapters", av_train.main,
                        [*TINY["av_dit"], f"autoencoder={av_ae['fp32']}", f"pretrained={pre}"], out, device, compiled)
    sample_variants(table, "av_dit", av["fp32"] / "pipeline", device,
                    lambda pipe: pipe(labels=[0, 1], steps=3, seed=0, progress=False), compiled)

    read = train_variants(table, "read", read_train.main, TINY["read"], out, device, compiled, log="denoiser")

    def drive(pipe):  # a noise soundtrack and a random picture, the same every call
        g, spec = torch.Generator().manual_seed(0), pipe.spec
        wave = 0.3 * torch.randn(1, spec.samples_per_frame * 6, generator=g)
        return pipe(audio=wave, reference=torch.rand(3, *spec.size, generator=g) * 2 - 1, frames=6, steps=2)

    sample_variants(table, "read", read["fp32"] / "pipeline", device, drive, compiled)


# ------------------------------------------------------------------ 3. torchrun

WORLD_STEPS, ACCUM, GLOBAL_BATCH = 3, 2, 8


def tiny_stdit(device: torch.device):
    from avblocks.dit.stdit import STDiT

    torch.manual_seed(0)
    model = STDiT(in_channels=4, side=8, frames=6, patch=2, hidden_size=64, depth=2, num_heads=2, num_classes=3,
                  class_dropout=0.0)
    with torch.no_grad():  # zero-initialised branches would leave nothing to compare
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.to(device)


def toy_data(device: torch.device):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(16, 4, 6, 8, 8, generator=g)
    t = torch.rand(16, 6, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    target = torch.randn(16, 4, 6, 8, 8, generator=g)
    return [v.to(device) for v in (x, t, y, target)]


def toy_steps(model, data, precision: str, device: torch.device, rank: int = 0, world: int = 1) -> list[float]:
    """3 AdamW steps on global batches of 8, this rank's slice in ``ACCUM`` micro-batches;
    returns each step's global-batch loss (mean over ranks)."""
    from avblocks.device import autocast
    from recipes.common import StepBatchSampler
    from recipes.common import distributed as D

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, t, y, target = data
    losses = []
    for index in D.ShardedBatchSampler(StepBatchSampler(num_items=16, batch_size=GLOBAL_BATCH,
                                                        total_steps=WORLD_STEPS, seed=7), rank=rank, world_size=world):
        micro = D.split_micro_batches(index, ACCUM)
        total = torch.zeros((), device=device)
        for i, part in enumerate(micro):
            with D.gradient_sync(model, enabled=i == len(micro) - 1), autocast(device, precision):
                loss = (model(x[part], t[part], y[part]).float() - target[part]).square().mean() / len(micro)
            loss.backward()
            total += loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dist.is_initialized():
            dist.all_reduce(total)
            total /= dist.get_world_size()
        losses.append(float(total))
    return losses


def dist_worker(out: str) -> None:
    """One rank under torchrun: DDP and FSDP2 on the toy model, fp32 and bf16."""
    from torch.distributed.fsdp import fully_shard

    from recipes.common import distributed as D
    from recipes.common.distributed.wrapping import _fully_shard_arguments

    device = resolve_device("auto")
    if is_cuda(device):
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    bound = {"device_id": device} if is_cuda(device) else {}
    dist.init_process_group(process_group_backend(device), **bound)  # world size 1 too: really NCCL
    rank, world = dist.get_rank(), dist.get_world_size()
    ctx = D.DistContext(rank, world, int(os.environ.get("LOCAL_RANK", 0)), device)
    data = toy_data(device)
    results = {"world": world, "backend": dist.get_backend()}
    for precision in ("fp32", "bf16"):
        model = tiny_stdit(device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, **D.ddp_arguments(device))
        losses = toy_steps(ddp, data, precision, device, rank, world)
        results[f"ddp_{precision}"] = {"losses": losses, "state": {k: v.cpu() for k, v in model.state_dict().items()}}
        model = tiny_stdit(device)
        arguments = _fully_shard_arguments(D.fsdp_plan(ctx, precision))
        for block in model.blocks:
            fully_shard(block, **arguments)
        fully_shard(model, **arguments)
        assert D.is_fsdp(model)
        losses = toy_steps(model, data, precision, device, rank, world)
        results[f"fsdp_{precision}"] = {"losses": losses, "state": D.full_model_state(model)}
    if rank == 0:
        torch.save(results, Path(out) / "dist.pt")
    dist.barrier()
    dist.destroy_process_group()


def torchrun(table: Table, device: torch.device, out: Path) -> None:
    nproc = torch.cuda.device_count() if is_cuda(device) else 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    if not is_cuda(device):
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               __file__, "--dist-worker", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"torchrun exited {done.returncode}: {done.stderr[-2000:]}")
    results = torch.load(out / "dist.pt", weights_only=True)
    table.add("torchrun", "ranks, backend", f"{results['world']}, {results['backend']}",
              f"{nproc}, {process_group_backend(device)}",
              "ok" if (results["world"], results["backend"]) == (nproc, process_group_backend(device)) else "FAIL")
    if is_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    tolerance = {"fp32": (1e-4, 1e-3), "bf16": (2e-2, 5e-2)}
    for precision in ("fp32", "bf16"):
        model = tiny_stdit(device)
        losses = toy_steps(model, toy_data(device), precision, device)
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        for engine in ("ddp", "fsdp"):
            got = results[f"{engine}_{precision}"]
            loss_tol, weight_tol = tolerance[precision]
            table.check("torchrun", f"{engine.upper()} {precision}: step losses vs one process (max rel)",
                        max(abs(a - b) / abs(b) for a, b in zip(got["losses"], losses, strict=True)), loss_tol)
            table.check("torchrun", f"{engine.upper()} {precision}: weights vs one process (rel L2)",
                        rel(torch.cat([v.flatten() for v in got["state"].values()]),
                            torch.cat([v.flatten() for v in state.values()])), weight_tol)
    if is_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if nproc >= 2:
        trainer_under_torchrun(table, nproc, out, env)
    else:
        table.add("torchrun", "trainer with DDP vs FSDP2", "one GPU: the trainer runs without a process group",
                  "", "skipped")


def trainer_under_torchrun(table: Table, nproc: int, out: Path, env: dict) -> None:
    runs = {}
    for engine in ("ddp", "fsdp"):
        folder = out / f"trainer_{engine}"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "recipes.proav_dit.train_autoencoder", *TINY["proav_ae"],
                   f"optim.batch_size={2 * nproc}", f"data.num_clips={max(8, 2 * nproc)}",
                   f"run.output_dir={folder}", f"run.parallel={engine}",
                   "optim.precision=bf16", "run.device=auto"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"{engine} trainer exited {done.returncode}: {done.stderr[-2000:]}")
        runs[engine] = logged(folder)
    table.check("torchrun", f"autoencoder trainer on {nproc} GPUs, FSDP2 vs DDP bf16 losses (max rel)",
                max(abs(a - b) / abs(b) for a, b in zip(runs["fsdp"], runs["ddp"], strict=True)), 2e-2)


# ------------------------------------------------------------------ 4. flex


def flex(table: Table, device: torch.device) -> None:
    from avblocks.attention import attend
    from avblocks.attention.masks import SlidingTileMask

    grid = (4, 16, 16) if is_cuda(device) else (2, 8, 8)
    n = grid[0] * grid[1] * grid[2]
    backward = is_cuda(device)  # PyTorch's FlexAttention has no CPU backward
    for dtype, tol in ((torch.bfloat16, 2e-2), (torch.float32, 2e-3)):
        for label, mask in (("sliding tiles", SlidingTileMask(grid=grid, tile=(1, 4, 4), window=(1, 2, 2))),
                            ("no mask", None)):
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(2, 4, n, 64, generator=g).to(device, dtype).requires_grad_(backward)
                       for _ in range(3))
            grads, outs = {}, {}
            for backend in ("flex", "sdpa"):
                context = contextlib.nullcontext() if backward else torch.no_grad()
                with context:
                    out = attend(q, k, v, mask=mask, backend=backend)
                outs[backend] = out.detach()
                if backward:
                    grads[backend] = torch.autograd.grad(out.float().square().sum(), (q, k, v))
            name = f"{label}, {str(dtype).removeprefix('torch.')}"
            table.check("flex", f"{name}: forward vs SDPA (rel L2)", rel(outs["flex"], outs["sdpa"]), tol)
            if backward:
                worst = max(rel(a, b) for a, b in zip(grads["flex"], grads["sdpa"], strict=True))
                table.check("flex", f"{name}: dq, dk, dv vs SDPA (worst rel L2)", worst, tol)
    if not backward:
        table.add("flex", "backward", "no FlexAttention backward on the CPU", "", "skipped")


# ------------------------------------------------------------------ 5. throughput


def stdit_at_preset(config: str, device: torch.device, small: bool):
    """ST-DiT of ``config`` at the 256 preset (``small``: 2 blocks of width 64, for the CPU)."""
    from paper_size import proav_codec, stdit_formula

    from avblocks.dit.stdit import STDiT
    from recipes.common.config import load_config
    from recipes.proav_dit.config import DiTRecipe

    cfg = load_config(DiTRecipe, ROOT / "recipes" / "proav_dit" / "configs" / f"{config}.yaml",
                      ["model.hidden_size=64", "model.depth=2", "model.num_heads=2"] if small else [])
    codec = proav_codec(cfg.model.patch)
    torch.manual_seed(0)
    m = cfg.model
    model = STDiT(in_channels=codec.channels, side=codec.side, frames=6, patch=m.patch, hidden_size=m.hidden_size,
                  depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, num_classes=9).to(device)
    return model, codec, stdit_formula(cfg, codec)[1]


def throughput(table: Table, device: torch.device, matmul: float, small: bool) -> None:
    from avblocks.device import autocast
    from avblocks.dit.compile import compile_blocks

    batch = 2 if small else 32
    for compiled in (False, True):
        model, codec, flops = stdit_at_preset("dit_256_B", device, small)
        if compiled:
            compile_blocks(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, codec.channels, 6, codec.side, codec.side, device=device)
        t, y = torch.rand(batch, 6, device=device), torch.zeros(batch, dtype=torch.long, device=device)

        def step(model=model, opt=opt, x=x, t=t, y=y):
            with autocast(device, "bf16"):
                loss = (model(x, t, y).float() - x).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(3):
            step()
        if is_cuda(device):
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(3 if small else 10):
            synchronize(device)
            began = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - began)
        seconds = sorted(times)[len(times) // 2]
        achieved = flops * batch / seconds / 1e12
        label = "compiled" if compiled else "eager"
        memory = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if is_cuda(device) else ""
        share = achieved / matmul
        table.add("throughput", f"ST-DiT-B @256 bf16 {label}, batch {batch}",
                  f"{seconds * 1e3:.1f} ms/step, {achieved:.1f} TFLOP/s = {share:.0%} of matmul{memory}",
                  ">= 40 % compiled" if compiled else "",
                  "info" if not compiled or small else ("ok" if share >= 0.40 else "below target"))
        del model, opt
        torch._dynamo.reset()


# ------------------------------------------------------------------ 6. sampling


def sampling(table: Table, device: torch.device, small: bool) -> None:
    from paper_size import proav_autoencoder_config

    from avblocks.codecs import TriPlaneCodec
    from avblocks.latent.mdsa import MDSA, MDSAConfig
    from avblocks.pipelines import FlowSampling, ProAVDiTPipeline
    from recipes.common.speed import library_config

    cfg = proav_autoencoder_config()
    overrides = dict(hidden_channels=16, depth=1, heads=2) if small else {}
    mdsa = MDSA.from_config(MDSAConfig(**{**vars(library_config(cfg.model, MDSAConfig)), **overrides}))
    denoiser, layout, _ = stdit_at_preset("dit_256_B", device, small)
    codec = TriPlaneCodec(cfg.data.spec(), mdsa, patch=layout.patch)
    pipe = ProAVDiTPipeline(codec, denoiser, sampling=FlowSampling(steps=25)).to(device)
    steps = 2 if small else 25
    for dtype in (torch.float32, torch.bfloat16):
        pipe.to(device, dtype)
        pipe(labels=[0], steps=2, progress=False)  # warm-up (kernels, caches)
        synchronize(device)
        began = time.perf_counter()
        clip = pipe(labels=[0], steps=steps, progress=False)
        synchronize(device)
        seconds = time.perf_counter() - began
        ok = tuple(clip.video.shape) == (1, 3, 16, 256, 256) and bool(torch.isfinite(clip.video).all())
        table.add("sampling", f"16 x 256^2 clip, {steps} Heun steps + decode, {str(dtype).removeprefix('torch.')}",
                  f"{seconds:.2f} s, video {tuple(clip.video.shape)}", "< 2 s" if not small else "",
                  "FAIL" if not ok else ("info" if small else ("ok" if seconds < 2 else "below target")))


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (the plumbing at small sizes)")
    parser.add_argument("--out", default=None, help="also write gpu_check.json and gpu_check.md here")
    parser.add_argument("--skip", nargs="*", default=[], choices=["recipes", "torchrun", "flex", "throughput",
                                                                  "sampling", "compile"])
    parser.add_argument("--dist-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dist_worker is not None:
        dist_worker(args.dist_worker)
        return 0
    if args.device != "cpu" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing checked. "
              "Run it on a GPU machine (DEVELOPERS.md says how), or with --device cpu for the plumbing.")
        return 0
    device = resolve_device(args.device)
    small = not is_cuda(device)
    table = Table()
    name = torch.cuda.get_device_name(device) if is_cuda(device) else "CPU"
    table.add("machine", "device", f"{name}, torch {torch.__version__}, {torch.cuda.device_count()} GPU(s)", "", "info")
    if is_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    with section(table, "matmul", device):
        matmul = matmul_rate(device, 1024 if small else 8192)
        table.add("matmul", f"bf16 {1024 if small else 8192}^3", f"{matmul:.1f} TFLOP/s", "", "info")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "recipes" not in args.skip:
            with section(table, "recipes", device):
                recipes(table, device, out, compiled="compile" not in args.skip)
        if "torchrun" not in args.skip:
            with section(table, "torchrun", device):
                torchrun(table, device, out)
    if "flex" not in args.skip:
        with section(table, "flex", device):
            flex(table, device)
    if "throughput" not in args.skip:
        with section(table, "throughput", device):
            throughput(table, device, matmul, small)
    if "sampling" not in args.skip:
        with section(table, "sampling", device):
            sampling(table, device, small)
    text = table.markdown()
    print("\n" + text)
    print("gpu_check: " + ("FAILED (see the FAIL rows)" if table.failed else "every check passed"))
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "gpu_check.md").write_text(text)
        (folder / "gpu_check.json").write_text(json.dumps(table.rows, indent=1) + "\n")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
