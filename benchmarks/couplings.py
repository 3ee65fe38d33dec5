"""The couplings side by side in one run: same data, same parameter budget, same steps.

    PYTHONPATH=. python benchmarks/couplings.py --out outputs/couplings            # everything
    PYTHONPATH=. python benchmarks/couplings.py --out outputs/couplings --couplings cross joint --systems
    python benchmarks/plot_couplings.py outputs/couplings/results.json docs/images/couplings.png

Opt-in (never in CI). Every stage runs in its own process, one thread each, and is skipped when
its output exists, so a rerun only does what is missing (delete a folder to redo it).
``--jobs N`` trains N models at a time; the per-step costs are measured afterwards, one model at
a time:

1. **Widths.** The budget is the parameter count of the dual-stream DiT with a gated
   cross-attention at ``--width`` (video) x 3/4 (audio). Every other coupling gets the video
   width (a multiple of 8, audio 3/4 of it) whose model comes closest to that count; so does
   ProAV-DiT's ST-DiT (hidden size) and AV-DiT (the frozen image DiT's hidden size, adapters
   included in the count). Depth is ``--depth`` for all.
2. **Training.** ``recipes.dual_stream.train`` per coupling (``--steps`` steps of ``--batch``
   clips, same seed, same clips: the synthetic set at ``--size`` pixels); ProAV-DiT: its MDSA
   autoencoder (``--autoencoder-steps``), then its denoiser for ``--steps`` steps; AV-DiT: its
   image autoencoder (``--autoencoder-steps``), the image-DiT pretraining for half of
   ``--steps`` and the adapters for the other half (the denoiser's steps are the budget;
   AV-DiT spends half of them on the stand-in for ImageNet pretraining).
3. **Sync, on mp4 files.** Each system's ``evaluate_sync`` entry point
   (:mod:`recipes.common.sync_eval`): ``--clips`` held-out clips with their labels, sampled
   through the saved pipeline folder with its own sampling defaults (the flow models: Heun 16
   steps, no guidance; AV-DiT: DDIM 25 steps, guidance 2), written as mp4 and read back:
   jointly, audio-to-video (the clips' sound given) and video-to-audio (their pictures given);
   AV-DiT generates jointly only. Scores: event F1 (onsets matched one-to-one to bounces in
   the same frame, and within one frame), AV-Align, the earlier AV-sync score and picture
   integrity (the share of frames showing one intact object: whether the video stream draws
   at all); real clips and shuffled real pairs (the chance level) for the scale.
4. **Cost of one training step** (batch ``--batch``, a fresh process per model, one thread):
   time (median of 5 after 2 warm-up steps; forward, backward and the AdamW step), peak memory
   (extra resident memory during one step: ``VmHWM - VmRSS`` after resetting the high-water
   mark through ``/proc/self/clear_refs``, ``MALLOC_MMAP_THRESHOLD_=65536``, in a second
   process: that allocator setting slows the timing), FLOPs (one
   forward and backward under ``torch.utils.flop_counter.FlopCounterMode`` with the ``math``
   attention backend: PyTorch's CPU SDPA kernel is invisible to the counter; masks do not cut
   the count).

Writes ``results.json`` (everything, with each stage's log folder) and ``results.md`` (the table).
"""

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUPLINGS = ("none", "cross", "joint", "resample", "gcm", "biblock", "random_shift")
COUPLING_OPTIONS = {"gcm": ["model.coupling.groups=4"], "biblock": ["model.coupling.halo=1"],
                    "random_shift": ["model.coupling.shift_window=5", "model.coupling.max_shift=2"]}
MODES = {"joint": "joint", "a2v": "audio_to_video", "v2a": "video_to_audio"}


# ---- workers (run in their own process) ---------------------------------------------------------


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def _training_step(system: str, run: Path, batch: int):
    """``(model, step())``: one training step of the run's denoiser on random inputs of its shapes."""
    import torch

    from avblocks.diffusion import FlowMatching
    from avblocks.diffusion.ddpm import DDPM

    flow = FlowMatching(time_distribution="logit_normal")
    if system == "dual_stream":
        from avblocks.dit.dual_stream import DualStreamDiT
        from recipes.dual_stream.train import stream_loss, stream_modes

        model = DualStreamDiT.from_pretrained(run / "model").train()
        video, audio = torch.randn(batch, *model.video_shape()), torch.randn(batch, *model.audio_shape())
        y = torch.arange(batch) % model.num_classes

        def loss():
            clean = stream_modes(batch, 0.15, 0.15)
            return stream_loss(model, flow, video, audio, y, flow.sample_timesteps(batch), *clean)["total"]
    elif system == "proav_dit":
        from avblocks.dit.stdit import STDiT

        model = STDiT.from_pretrained(run / "dit" / "model").train()
        x0 = torch.randn(batch, model.in_channels, model.frames, model.side, model.side)
        y = torch.arange(batch) % model.y_embedder.num_classes

        def loss():
            t = flow.sample_timesteps(batch)[:, None].expand(batch, model.frames).contiguous()
            return flow.loss(model, x0, t=t, model_kwargs={"y": y})
    else:
        from avblocks.dit.av_dit import AVDiT

        model = AVDiT.from_pretrained(run / "adapters" / "model").train()
        dit = model.dit
        x0 = torch.randn(batch, dit.in_channels, model.num_images, dit.input_size, dit.input_size)
        y = torch.arange(batch) % model.num_clip_classes
        ddpm = DDPM(prediction="epsilon")

        def loss():
            t = ddpm.sample_timesteps(batch)
            noise = torch.randn_like(x0)
            return (model(ddpm.q_sample(x0, t, noise), t, y) - noise).square().mean()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step(with_optimizer: bool = True):
        value = loss()
        value.backward()
        if with_optimizer:
            opt.step()
        opt.zero_grad(set_to_none=True)
    return model, step


def cost_worker(cfg: dict) -> dict:
    """Time (``probe: time``) or peak memory and FLOPs (``probe: memory``, the process started with
    the allocator setting the probe needs, which would slow the timing) of one training step."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from avblocks.attention import attention_backend

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    model, step = _training_step(cfg["system"], Path(cfg["run"]), cfg["batch"])
    for _ in range(2):
        step()
    if cfg["probe"] == "time":
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return {"time_s": statistics.median(times)}
    before = _status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step()
    peak = _status()["VmHWM"] - before
    with attention_backend("math"), FlopCounterMode(display=False) as counter:
        step(with_optimizer=False)
    return {"peak_bytes": max(peak, 0), "flops": counter.get_total_flops(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def params_worker(cfg: dict) -> dict:
    """Parameter counts of candidate widths (models built on the CPU, never run)."""
    from avblocks.coupling import CouplingConfig
    from avblocks.dit.av_dit import AVDiT
    from avblocks.dit.dit import DiTConfig
    from avblocks.dit.dual_stream import AudioStreamConfig, DualStreamDiT, VideoStreamConfig
    from avblocks.dit.stdit import STDiT

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    size, depth, out = cfg["size"], cfg["depth"], {}
    for width in cfg["widths"]:
        if cfg["system"] == "dual_stream":
            model = DualStreamDiT(video=VideoStreamConfig(size=(size, size), patch=cfg["video_patch"], width=width),
                                  audio=AudioStreamConfig(width=audio_width(width)), depth=depth,
                                  coupling=CouplingConfig(kind=cfg["coupling"], groups=4, halo=1))
        elif cfg["system"] == "proav_dit":
            model = STDiT(in_channels=4, side=cfg["side"], patch=(1, cfg["side"]), hidden_size=width, depth=depth,
                          num_heads=4, num_classes=4)
        else:
            latent = size // 4
            dit = DiTConfig(input_size=latent, patch_size=2, in_channels=4, hidden_size=width, depth=depth,
                            num_heads=4, num_classes=8, learn_sigma=False)
            model = AVDiT(dit=dit, video_frames=16, audio_images=4, num_clip_classes=4, fusion_every=2)
        out[str(width)] = count(model)
    return {"counts": out}


def audio_width(video_width: int) -> int:
    return max(8, round(0.75 * video_width / 8) * 8)


# ---- driver -------------------------------------------------------------------------------------


def _env(memory_probe: bool = False) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if memory_probe:  # returns freed blocks to the OS so VmHWM sees each step's own peak
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def worker(kind: str, cfg: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(cfg)], capture_output=True,
                          text=True, env=_env(cfg.get("probe") == "memory"), cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{kind} worker failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def module_run(module: str, args: list[str], log: Path) -> None:
    """``python -m module args``, its output to ``log`` (one thread)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", module, *args], stdout=f, stderr=subprocess.STDOUT,
                              env=_env(), cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{module} failed, see {log}")


def closest(counts: dict[str, int], budget: int) -> tuple[int, int]:
    width = min(counts, key=lambda w: abs(counts[w] - budget))
    return int(width), counts[width]


def train_dual(args, out: Path, coupling: str, width: int) -> Path:
    run = out / f"dual_{coupling}"
    if not (run / "pipeline" / "pipeline.json").is_file():
        module_run("recipes.dual_stream.train", [
            "--config", str(ROOT / "recipes/dual_stream/configs/tiny.yaml"), f"run.output_dir={run}",
            f"data.size={args.size}", f"model.video_patch={args.video_patch}", f"model.video_width={width}",
            f"model.audio_width={audio_width(width)}", f"model.depth={args.depth}", f"model.coupling.kind={coupling}",
            f"optim.steps={args.steps}", f"optim.batch_size={args.batch}", "run.progress=false",
            *COUPLING_OPTIONS.get(coupling, [])], out / "logs" / f"dual_{coupling}.log")
    return run


def train_proav(args, out: Path, width: int) -> Path:
    run, data = out / "proav_dit", [f"data.size={args.size}", "run.progress=false"]
    ae = Path(args.proav_autoencoder) if args.proav_autoencoder else run / "autoencoder"
    if not (ae / "model" / "config.json").is_file():
        module_run("recipes.proav_dit.train_autoencoder", [
            "--config", str(ROOT / "recipes/proav_dit/configs/autoencoder_tiny.yaml"), f"run.output_dir={ae}",
            f"optim.steps={args.autoencoder_steps}", *data], out / "logs" / "proav_autoencoder.log")
    if not (run / "dit" / "pipeline" / "pipeline.json").is_file():
        module_run("recipes.proav_dit.train_dit", [
            "--config", str(ROOT / "recipes/proav_dit/configs/dit_tiny.yaml"), f"autoencoder={ae}",
            f"run.output_dir={run / 'dit'}", f"model.hidden_size={width}", f"model.depth={args.depth}",
            f"optim.steps={args.steps}", f"optim.batch_size={args.batch}", "run.progress=false"],
            out / "logs" / "proav_dit.log")
    return run


def train_av(args, out: Path, width: int) -> Path:
    run, data = out / "av_dit", [f"data.size={args.size}", "run.progress=false"]
    configs = ROOT / "recipes/av_dit/configs"
    ae = Path(args.av_autoencoder) if args.av_autoencoder else run / "autoencoder"
    if not (ae / "model" / "config.json").is_file():
        module_run("recipes.av_dit.train_autoencoder", [
            "--config", str(configs / "autoencoder_tiny.yaml"), f"run.output_dir={ae}",
            f"optim.steps={args.autoencoder_steps}", *data], out / "logs" / "av_autoencoder.log")
    half = max(1, args.steps // 2)
    if not (run / "pretrain" / "model" / "config.json").is_file():
        module_run("recipes.av_dit.pretrain", [
            "--config", str(configs / "pretrain_tiny.yaml"), f"autoencoder={ae}", f"run.output_dir={run / 'pretrain'}",
            f"model.hidden_size={width}", f"model.depth={args.depth}", f"optim.steps={half}",
            f"optim.batch_size={args.batch}", "run.progress=false"], out / "logs" / "av_pretrain.log")
    if not (run / "adapters" / "pipeline" / "pipeline.json").is_file():
        module_run("recipes.av_dit.train", [
            "--config", str(configs / "av_dit_tiny.yaml"), f"autoencoder={ae}", f"pretrained={run / 'pretrain'}",
            f"run.output_dir={run / 'adapters'}", f"optim.steps={args.steps - half}",
            f"optim.batch_size={args.batch}", "run.progress=false"], out / "logs" / "av_adapters.log")
    return run


def evaluate(args, out: Path, system: str, run: Path, name: str) -> dict:
    """The sets of ``<system>.evaluate_sync`` on ``run`` (its metrics.json; computed once)."""
    metrics = run / "sync_eval" / "metrics.json"
    if not metrics.is_file():
        module_run(f"recipes.{system}.evaluate_sync", [f"run_dir={run}", f"clips={args.clips}",
                                                       f"data.size={args.size}", f"out={metrics.parent}"],
                   out / "logs" / f"{name}_sync.log")
    return json.loads(metrics.read_text())["sets"]


def _cells(sets: dict, key, fmt: str = "{:.2f}") -> str:
    """One metric over the three modes, ``joint / a2v / v2a`` (``-`` where a system has no such mode)."""
    values = []
    for mode in MODES.values():
        value = key(sets[mode]) if mode in sets else None
        values.append("-" if value is None else fmt.format(value))
    return " / ".join(values)


def row(name: str, r: dict) -> str:
    sets, c = r["sets"], r["cost"]
    return (f"| {name} | {r['parameters']:,} | {r['width']} | {r.get('train_minutes', 0):.1f} | "
            f"{1000 * c['time_s']:.0f} | {c['flops'] / 1e9:.1f} | {c['peak_bytes'] / 2**20:.0f} | "
            f"{_cells(sets, lambda m: m['event_f1_exact'])} | {_cells(sets, lambda m: m['event_f1_1frame'])} | "
            f"{_cells(sets, lambda m: m['av_align']['mean'])} | {_cells(sets, lambda m: m['sync_score'])} | "
            f"{_cells(sets, lambda m: m['integrity']['score'])} |")


def _reference_row(name: str, m: dict) -> str:
    return (f"| {name} | - | - | - | - | - | - | {m['event_f1_exact']:.2f} | {m['event_f1_1frame']:.2f} | "
            f"{m['av_align']['mean']:.2f} | {m['sync_score']:.2f} | {m['integrity']['score']:.2f} |")


def table(results: dict) -> str:
    ref = results["reference"]
    lines = [f"Budget {results['budget']:,} parameters, {results['steps']} steps of {results['batch']} clips, "
             f"{results['size']}x{results['size']} pixels, {results['clips']} held-out clips read back from mp4. "
             "Each metric as joint / audio-to-video / video-to-audio; the real clips and shuffled real pairs "
             "(clip i's video with clip i + 1's sound: the chance level) for scale.", "",
             "| model | parameters | width | train min | ms / step | GFLOP / step | peak MB / step "
             "| event F1 exact | event F1 +-1 frame | AV-Align | AV-sync | picture integrity |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|---|",
             _reference_row("real clips", ref["real"]), _reference_row("shuffled real pairs", ref["shuffled"])]
    lines += [row(name, r) for name, r in results["models"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    p.add_argument("--table", type=Path, metavar="RESULTS_JSON", help="only print the table of a results.json")
    p.add_argument("--out", type=Path, default=Path("outputs/couplings"))
    p.add_argument("--couplings", nargs="*", default=list(COUPLINGS), choices=COUPLINGS)
    p.add_argument("--systems", nargs="*", default=["proav_dit", "av_dit"], choices=["proav_dit", "av_dit"])
    p.add_argument("--steps", type=int, default=400, help="denoiser training steps (every model)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=16, help="frame side in pixels (the synthetic set)")
    p.add_argument("--video-patch", type=int, default=4)
    p.add_argument("--width", type=int, default=64, help="video width of the cross-attention model (the budget)")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--autoencoder-steps", type=int, default=600)
    p.add_argument("--proav-autoencoder", help="reuse this ProAV-DiT autoencoder run (same data)")
    p.add_argument("--av-autoencoder", help="reuse this AV-DiT autoencoder run (same data)")
    p.add_argument("--jobs", type=int, default=1, help="models trained at a time (one thread each)")
    args = p.parse_args()
    if args.worker:
        kind, cfg = args.worker
        print(json.dumps({"cost": cost_worker, "params": params_worker}[kind](json.loads(cfg))))
        return
    if args.table:
        print(table(json.loads(args.table.read_text())), end="")
        return
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    began, load = time.monotonic(), os.getloadavg()
    common = {"size": args.size, "depth": args.depth, "video_patch": args.video_patch, "side": 16}
    widths = list(range(32, 257, 8))
    budget = worker("params", {**common, "system": "dual_stream", "coupling": "cross",
                               "widths": [args.width]})["counts"][str(args.width)]
    results = {"budget": budget, "steps": args.steps, "batch": args.batch, "size": args.size, "clips": args.clips,
               "depth": args.depth, "models": {}, "load_average_start": load}
    trainers = {"proav_dit": ("ProAV-DiT", train_proav), "av_dit": ("AV-DiT", train_av)}
    plan = []  # (name, system, width, parameters, train(): run folder, the folder evaluate_sync reads)
    for coupling in args.couplings:
        counts = worker("params", {**common, "system": "dual_stream", "coupling": coupling, "widths": widths})["counts"]
        width, count = closest(counts, budget)
        print(f"dual-stream {coupling}: width {width}/{audio_width(width)}, {count:,} parameters", flush=True)
        plan.append((f"dual-stream, {coupling}", "dual_stream", width, count,
                     functools.partial(train_dual, args, out, coupling, width), ""))
    for system in args.systems:
        counts = worker("params", {**common, "system": system, "widths": widths})["counts"]
        width, count = closest(counts, budget)
        name, trainer = trainers[system]
        print(f"{name}: width {width}, {count:,} parameters", flush=True)
        plan.append((name, system, width, count, functools.partial(trainer, args, out, width),
                     "dit" if system == "proav_dit" else "adapters"))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # training only: the costs are measured alone
        runs = list(pool.map(lambda item: item[4](), plan))
    for (name, system, width, count, _, sub), run in zip(plan, runs):
        tag = f"dual_{run.name.removeprefix('dual_')}" if system == "dual_stream" else system
        sets = evaluate(args, out, system, run / sub if sub else run, tag)
        results.setdefault("reference", {"real": sets["real"], "shuffled": sets["shuffled"]})
        probe = {"system": system, "run": str(run), "batch": args.batch, "threads": 1}
        cost = {**worker("cost", {**probe, "probe": "time"}), **worker("cost", {**probe, "probe": "memory"})}
        logs = {"dual_stream": [f"{tag}.log"], "proav_dit": ["proav_dit.log"],
                "av_dit": ["av_pretrain.log", "av_adapters.log"]}[system]
        results["models"][name] = {"width": width, "parameters": count, "run": str(run), "sets": sets,
                                   "cost": cost, "train_minutes": sum(_train_minutes(out / "logs" / log) for log in logs)}
    results["minutes"] = round((time.monotonic() - began) / 60, 1)
    results["load_average_end"] = os.getloadavg()
    results["table"] = table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(results["table"])
    print(results["table"])


def _train_minutes(log: Path) -> float:
    """``train_minutes`` of the result a recipe printed last (JSON) into its log; 0 when unknown
    (a stage reused from an earlier run of this benchmark keeps its log)."""
    if not log.is_file():
        return 0.0
    text = log.read_text()
    start = text.rfind("\n{\n")
    try:
        return float(json.loads(text[start + 1:]).get("train_minutes", 0.0))
    except (ValueError, AttributeError):
        return 0.0


if __name__ == "__main__":
    main()
