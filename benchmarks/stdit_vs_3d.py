"""ProAV-DiT's ST-DiT (planes on a canvas, or packed) vs a full-3D DiT on the same sounding clip.

Three denoisers of the same width, depth, heads, MLP ratio and patch shape, differing only in
token layout and attention pattern:

- ``canvas``: :class:`avblocks.dit.STDiT` on the six tri-planes zero-padded onto one ``s x s``
  canvas (``6 (s/p)(s/q)`` tokens, padding tokens included);
- ``packed``: :class:`avblocks.dit.PackedSTDiT` on the same planes packed without padding
  (each plane on its own grid, the patch cropped to it), ``--across`` rule;
- ``full3d``: DiT blocks with full attention over the video tokens (patch ``(1, p, q)`` on the
  ``t h w`` latent) and the audio tokens (same patch on ``t f w``), sides zero-padded to the
  patch, concatenated in one sequence, fixed 3D sin-cos positions per modality.

One sampling step = one forward at ``--batch`` (default 2: the two halves of a
classifier-free-guidance step), no gradients, float32, this machine's CPU.

Clip and latents (16 frames, 4 latent channels per modality): video ``b 3 16 R R``, autoencoder
down-sampling ``(1, a, a)`` (``a = 4`` for the ``32``, ``64``, ``256`` presets, ``a = 8`` for
``256/8``); audio as video-like audio ``b 1 16 64 10`` with autoencoder patch ``(1, 4, 2)``:
latent ``16 x 16 x 5``. Tri-planes: video ``hw: h'w'``, ``th: t'h'``, ``tw: t'w'``; audio
``hw: f'w''``, ``th: t'f'``, ``tw: t'w''``. Patches (``--patches``): ``2`` (DiT's square 2x2)
and ``1x16`` (the demo's rows: one token per plane row, ``configs/dit_tiny.yaml``).

FLOPs (forward, multiply-add = 2, per sample; ``d`` width, ``r`` MLP ratio): a DiT block on
``n`` tokens ``2n(4d^2 + 2rd^2) + 4 n^2 d``; an ST-DiT block on ``N`` tokens
``2N(8d^2 + 2rd^2) + 4d (pairs_within + pairs_across)`` where the pairs are the query-key pairs
its two attentions compute (canvas: ``6 n_p^2`` and ``n_p 6^2``; packed: counted from its
layout, :meth:`PackedTokens.attention_pairs`); plus the patch embedding and final layer
(``2 * 2 (p q c) d`` per token), adaLN (per plane for ST-DiT) and the conditioning MLPs.

Measurements (``AVBLOCKS_TYPECHECK=0``, ``--threads`` intra-op threads):

- **time**: one subprocess per (preset, patch, attention) holds the three models; after a
  warm-up call each, ``--repeats`` rounds call them in turn (interleaved: a change of the
  machine's load hits all three alike); median per model. No allocator setting is in force;
- **memory**: one subprocess per model, started with ``MALLOC_MMAP_THRESHOLD_=65536`` (freed
  buffers go back to the OS, so each call starts from the same baseline): extra resident
  memory of one forward, ``VmHWM - VmRSS`` after resetting the high-water mark
  (``/proc/self/clear_refs``): the activation memory of a step. Weights (4 bytes x
  parameters) are reported apart and "total x" uses weights + activations;
- a model whose forward exceeds ``--measure-gflop`` (full 3D at 256) runs fewer blocks ``k``
  and its time is scaled by ``depth / k`` (identical blocks; embeddings < 1 % of the work);
  its activation peak does not grow with depth, its weights are scaled exactly;
- achieved FLOP/s = formula FLOPs / median time, against this machine's fp32 matmul rate
  measured in the same run (best of square ``--matmul-size`` matmuls at the start and end);
- ``--profile``: the share of CPU time of the top operators of ``--repeats`` eager ST-DiT
  forwards of each layout (``torch.profiler``; ``copy_`` is the layout copies);
- threads: on a shared machine use ``--threads 1`` (more OpenMP threads than free cores wait
  at every barrier).

Usage:
  quick smoke run:  python benchmarks/stdit_vs_3d.py --quick
  full run:         python benchmarks/stdit_vs_3d.py --threads 1 --profile --out /tmp/stdit_vs_3d.md
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

FRAMES = 16
LATENT_C = 4
AUDIO_LATENT = (16, 16, 5)  # b 1 16 64 10 video-like audio, autoencoder patch (1, 4, 2)
PRESETS = {  # name: (pixel side R, video autoencoder spatial down-sampling a)
    "32": (32, 4),
    "64": (64, 4),
    "256": (256, 4),
    "256/8": (256, 8),
}
PATCHES = {"2": (2, 2), "1x16": (1, 16)}
WIDTHS = {
    "base": dict(hidden=384, depth=12, heads=6, mlp_ratio=4.0),
    "tiny": dict(hidden=128, depth=4, heads=4, mlp_ratio=4.0),
}
MODELS = ("canvas", "packed", "full3d")
NUM_CLASSES = 9


# ---- geometry and FLOPs ---------------------------------------------------------------------


def _up(n: int, k: int) -> int:
    return -(-n // k)


def geometry(video_latent: tuple[int, int, int], audio_latent: tuple[int, int, int],
             patch: tuple[int, int]) -> dict:
    """Planes, canvas side and token counts of one clip geometry (no torch)."""
    t, h, w = video_latent
    ta, fa, wa = audio_latent
    p, q = patch
    planes = [(h, w), (t, h), (t, w), (fa, wa), (ta, fa), (ta, wa)]
    side = _up(max(max(s) for s in planes), math.lcm(p, q)) * math.lcm(p, q)
    n_plane = (side // p) * (side // q)
    real = sum(_up(r, p) * _up(c, q) for r, c in planes)
    packed = sum(_up(r, min(p, r)) * _up(c, min(q, c)) for r, c in planes)
    video_tokens = t * _up(h, p) * _up(w, q)
    audio_tokens = ta * _up(fa, p) * _up(wa, q)
    return {
        "video_latent": video_latent, "audio_latent": audio_latent, "planes": planes, "patch": patch,
        "side": side, "n_plane": n_plane, "canvas_tokens": 6 * n_plane,
        "canvas_padding": 6 * n_plane - real, "packed_tokens": packed,
        "video_tokens": video_tokens, "audio_tokens": audio_tokens, "full3d_tokens": video_tokens + audio_tokens,
    }


def preset_geometry(preset: str, patch: tuple[int, int]) -> dict:
    pixels, down = PRESETS[preset]
    return geometry((FRAMES, pixels // down, pixels // down), AUDIO_LATENT, patch)


def flops(model: str, geo: dict, width: dict, depth: int | None = None, pairs: dict | None = None) -> float:
    """Forward FLOPs per sample by the formulas of the module docstring (``pairs``: the packed
    layout's attention pairs, from the worker)."""
    d, r = width["hidden"], width["mlp_ratio"]
    p, q = geo["patch"]
    depth = width["depth"] if depth is None else depth
    io = 2 * p * q * LATENT_C * d * 2  # patch embedding + final layer, per token (packed: an upper bound)
    cond = 2 * 256 * d + 2 * d * d  # timestep MLP per row
    if model in ("canvas", "packed"):
        if model == "canvas":
            n, n_p = geo["canvas_tokens"], geo["n_plane"]
            attention = 6 * n_p ** 2 + n_p * 36
        else:
            n, attention = geo["packed_tokens"], pairs["within"] + pairs["across"]
        block = 2 * n * (8 * d * d + 2 * r * d * d) + 4 * d * attention + 6 * 2 * 9 * d * d
        return depth * block + n * io + 6 * (cond + 2 * 2 * d * d)
    n = geo["full3d_tokens"]
    block = 2 * n * (4 * d * d + 2 * r * d * d) + 4 * n * n * d + 2 * 6 * d * d
    return depth * block + n * io + cond + 2 * 2 * d * d


# ---- the models ---------------------------------------------------------------------------------


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def _full3d_class():
    """The baseline, defined lazily so the driver does not import torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from avblocks.attention.positional import sincos_3d
    from avblocks.dit import (
        DiTBlock,
        FinalLayer,
        LabelEmbedder,
        PatchEmbed3d,
        TimestepEmbedder,
        unpatchify3d,
    )

    def table(d: int, grid: tuple[int, int, int]) -> torch.Tensor:
        k = d - d % 6  # sincos_3d needs a multiple of 6; the rest of the channels stay 0
        return F.pad(sincos_3d(k, *grid), (0, d - k))

    class Full3DDiT(nn.Module):
        """DiT with full attention over the concatenated video + audio 3D token sequences."""

        def __init__(self, *, video_thw, audio_tfw, patch, hidden, depth, heads, mlp_ratio):
            super().__init__()
            self.p, self.q = patch
            self.video_thw, self.audio_tfw = video_thw, audio_tfw
            self.video_pad = (_up(video_thw[1], self.p) * self.p, _up(video_thw[2], self.q) * self.q)
            self.audio_pad = (_up(audio_tfw[1], self.p) * self.p, _up(audio_tfw[2], self.q) * self.q)
            pp = (1, self.p, self.q)
            self.video_embed = PatchEmbed3d(in_channels=LATENT_C, hidden_size=hidden, patch_size=pp)
            self.audio_embed = PatchEmbed3d(in_channels=LATENT_C, hidden_size=hidden, patch_size=pp)
            vg = (video_thw[0], self.video_pad[0] // self.p, self.video_pad[1] // self.q)
            ag = (audio_tfw[0], self.audio_pad[0] // self.p, self.audio_pad[1] // self.q)
            self.n_video = math.prod(vg)
            self.register_buffer("pos", torch.cat([table(hidden, vg), table(hidden, ag)]), persistent=False)
            self.modality = nn.Parameter(torch.zeros(2, hidden))
            self.t_embedder = TimestepEmbedder(hidden_size=hidden)
            self.y_embedder = LabelEmbedder(num_classes=NUM_CLASSES, hidden_size=hidden)
            self.blocks = nn.ModuleList(
                DiTBlock(hidden_size=hidden, num_heads=heads, mlp_ratio=mlp_ratio) for _ in range(depth)
            )
            self.final_layer = FinalLayer(hidden_size=hidden, patch_dim=self.p * self.q * LATENT_C)

        def forward(self, video, audio, t, y):
            video = F.pad(video, (0, self.video_pad[1] - video.shape[-1], 0, self.video_pad[0] - video.shape[-2]))
            audio = F.pad(audio, (0, self.audio_pad[1] - audio.shape[-1], 0, self.audio_pad[0] - audio.shape[-2]))
            tv, ta = self.video_embed(video), self.audio_embed(audio)
            x = torch.cat([tv + self.modality[0], ta + self.modality[1]], dim=1) + self.pos
            c = self.t_embedder(t * 1000.0) + self.y_embedder(y)
            for block in self.blocks:
                x = block(x, c)
            x = self.final_layer(x, c)
            pp = (1, self.p, self.q)
            v = unpatchify3d(x[:, : self.n_video], pp, (self.video_thw[0], *self.video_pad))
            a = unpatchify3d(x[:, self.n_video:], pp, (self.audio_tfw[0], *self.audio_pad))
            return (v[..., : self.video_thw[1], : self.video_thw[2]],
                    a[..., : self.audio_tfw[1], : self.audio_tfw[2]])

    return Full3DDiT


def build(model: str, geo: dict, width: dict, depth: int, batch: int, across: str = "position",
          time_window: int | None = None):
    """``(module, inputs, pairs)`` of one model at one geometry."""
    import torch

    from avblocks.dit import PackedSTDiT, STDiT

    torch.manual_seed(0)
    kw = dict(in_channels=LATENT_C, patch=geo["patch"], hidden_size=width["hidden"], depth=depth,
              num_heads=width["heads"], mlp_ratio=width["mlp_ratio"], num_classes=NUM_CLASSES)
    t, y = torch.rand(batch, 6), torch.arange(batch) % NUM_CLASSES
    if model == "canvas":
        s = geo["side"]
        return STDiT(side=s, frames=6, **kw).eval(), (torch.randn(batch, LATENT_C, 6, s, s), t, y), None
    if model == "packed":
        net = PackedSTDiT(planes=tuple(geo["planes"]), across=across, time_window=time_window, **kw).eval()
        x = torch.randn(batch, LATENT_C, net.num_cells)
        return net, (x, t, y), net.layout.attention_pairs()
    net = _full3d_class()(video_thw=geo["video_latent"], audio_tfw=geo["audio_latent"], patch=geo["patch"],
                          hidden=width["hidden"], depth=depth, heads=width["heads"],
                          mlp_ratio=width["mlp_ratio"]).eval()
    inputs = (torch.randn(batch, LATENT_C, *geo["video_latent"]), torch.randn(batch, LATENT_C, *geo["audio_latent"]),
              torch.rand(batch), y)
    if model == "svg":  # every layer and step sparse: the cost of one sparse step
        from avblocks.attention.sparse_video import SparseVideoAttention

        (t, h, w), (p, q) = geo["video_latent"], geo["patch"]
        SparseVideoAttention(net, grid=(t, _up(h, p), _up(w, q)), extra_tokens=geo["audio_tokens"],
                             dense_layers=0, dense_steps=0)
    return net, inputs, None


def profile_table(model, inputs, calls: int, top: int = 10) -> dict[str, float]:
    """Share of CPU time of the top operators over ``calls`` forwards (``torch.profiler``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            model(*inputs)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {e.key: round(e.self_cpu_time_total / total, 3) for e in ranked}


# ---- workers: timing (all models interleaved), memory (one model) -------------------------------


def time_worker(cfg: dict) -> dict:
    import torch

    from avblocks.attention import attention_backend

    torch.set_num_threads(cfg["threads"])
    geo, width = cfg["geo"], cfg["width"]
    built = {m: build(m, geo, width, cfg["depth_run"][m], cfg["batch"], cfg["across"], cfg.get("time_window"))
             for m in cfg["models"]}
    results = {}
    with torch.inference_mode(), attention_backend(cfg["attention"]):
        for name, (model, inputs, pairs) in built.items():
            if cfg.get("compile"):
                model = torch.compile(model)  # inductor; the warm-up call includes compiling
                built[name] = (model, inputs, pairs)
            t0 = time.perf_counter()
            model(*inputs)
            results[name] = {"first_s": time.perf_counter() - t0, "times": [], "pairs": pairs,
                             "params_run": sum(p.numel() for p in model.parameters()),
                             "block_params": sum(p.numel() for p in
                                                 getattr(model, "_orig_mod", model).blocks[0].parameters())}
        for _ in range(cfg["repeats"]):
            for name, (model, inputs, _) in built.items():
                t0 = time.perf_counter()
                model(*inputs)
                results[name]["times"].append(time.perf_counter() - t0)
        if cfg.get("profile"):
            for name in ("canvas", "packed"):
                if name in built:
                    results[name]["profile"] = profile_table(built[name][0], built[name][1], cfg["repeats"])
    for r in results.values():
        r["time_s"], r["min_time_s"] = statistics.median(r["times"]), min(r["times"])
    return results


def memory_worker(cfg: dict) -> dict:
    import torch

    from avblocks.attention import attention_backend

    torch.set_num_threads(cfg["threads"])
    (name,) = cfg["models"]
    model, inputs, _ = build(name, cfg["geo"], cfg["width"], cfg["depth_run"][name], cfg["batch"], cfg["across"],
                             cfg.get("time_window"))
    if cfg.get("compile"):
        model = torch.compile(model)
    with torch.inference_mode(), attention_backend(cfg["attention"]):
        model(*inputs)
        before = _status()["VmRSS"]
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        model(*inputs)
        peak = _status()["VmHWM"] - before
    return {name: {"peak_bytes": max(peak, 0)}}


def matmul_worker(cfg: dict) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    n = cfg["size"]
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2 * n ** 3 / best / 1e9}


WORKERS = {"time": time_worker, "memory": memory_worker, "matmul": matmul_worker}


def run_worker(kind: str, cfg: dict, timeout: float) -> dict:
    """One worker in a fresh process; memory workers with the allocator setting, others without."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    env["AVBLOCKS_TYPECHECK"] = "0"
    if kind == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = f"{root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(cfg)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(lines[-1])


def measure(geo: dict, width: dict, args, models=MODELS, attention: str = "sdpa",
            time_window: int | None = None) -> dict:
    """Time (interleaved, one process) and memory (one process per model) of ``models``."""
    depth_run = {}
    for m in models:
        per_block = flops(m, geo, width, 1, _PAIRS_GUESS) - flops(m, geo, width, 0, _PAIRS_GUESS)
        total = args.batch * flops(m, geo, width, None, _PAIRS_GUESS)
        depth_run[m] = width["depth"]
        if m == "full3d" and total > args.measure_gflop * 1e9:
            depth_run[m] = max(1, min(width["depth"], int(args.measure_gflop * 1e9 / (args.batch * per_block))))
    cfg = {"geo": geo, "width": width, "models": list(models), "depth_run": depth_run, "batch": args.batch,
           "repeats": args.repeats, "threads": args.threads, "attention": attention, "across": args.across,
           "time_window": time_window, "compile": args.compile, "profile": getattr(args, "profile", False)}
    timed = run_worker("time", cfg, args.timeout)
    out = {}
    for m in models:
        r = dict(timed.get(m, {"error": timed.get("error", "?")}))
        if "error" not in r:
            r.update(run_worker("memory", {**cfg, "models": [m]}, args.timeout).get(m, {"peak_bytes": None}))
        r["depth_run"] = depth_run[m]
        r["gflop"] = args.batch * flops(m, geo, width, None, r.get("pairs") or _PAIRS_GUESS) / 1e9
        out[m] = r
    return out


# only for choosing how many full-3D blocks to run (ST models always run whole)
_PAIRS_GUESS = {"within": 0, "across": 0}


def full_depth(r: dict, width: dict) -> dict:
    """Time and weights at the full depth from a reduced-depth measurement."""
    k, depth = r["depth_run"], width["depth"]
    return {"time_s": r["time_s"] * depth / k,
            "weights_bytes": 4 * (r["params_run"] + (depth - k) * r["block_params"]),
            "peak_bytes": r.get("peak_bytes") or 0}


def matmul_rate(args) -> float:
    return max(run_worker("matmul", {"size": n, "threads": args.threads}, args.timeout).get("gflops", 0.0)
               for n in args.matmul_size)


# ---- driver ---------------------------------------------------------------------------------------


def _x(a: float, b: float) -> str:
    return f"{a / b:.1f}" if b else "-"


def table(rows: list[tuple[str, str, str, dict, dict]], width: dict, matmul: float) -> str:
    head = ("| preset | patch | attention | tokens canvas (padding) / packed / 3D | GFLOP canvas / packed / 3D "
            "| ms/step canvas / packed / 3D | x 3D/canvas | x 3D/packed | x canvas/packed "
            "| act. MB canvas / packed / 3D | x 3D/packed | total x 3D/packed "
            "| GFLOP/s (% matmul) canvas / packed | 3D blocks run |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for preset, patch, attention, geo, res in rows:
        lead = (f"| {preset} | {patch} | {attention} | {geo['canvas_tokens']} "
                f"({100 * geo['canvas_padding'] / geo['canvas_tokens']:.0f} %) / {geo['packed_tokens']} / "
                f"{geo['full3d_tokens']} | " + " / ".join(f"{res[m]['gflop']:.1f}" for m in MODELS))
        errors = [f"{m}: {res[m]['error']}" for m in MODELS if "error" in res[m]]
        if errors:
            lines.append(lead + f" | {'; '.join(errors)} | | | | | | | | |")
            continue
        full = {m: full_depth(res[m], width) for m in MODELS}
        t = {m: full[m]["time_s"] for m in MODELS}
        mem = {m: full[m]["peak_bytes"] for m in MODELS}
        tot = {m: full[m]["peak_bytes"] + full[m]["weights_bytes"] for m in MODELS}
        rate = {m: res[m]["gflop"] / t[m] for m in ("canvas", "packed")}
        lines.append(
            lead + " | " + " / ".join(f"{1e3 * t[m]:.0f}" for m in MODELS)
            + f" | {_x(t['full3d'], t['canvas'])} | {_x(t['full3d'], t['packed'])} | {_x(t['canvas'], t['packed'])}"
            + " | " + " / ".join(f"{mem[m] / 2**20:.0f}" for m in MODELS)
            + f" | {_x(mem['full3d'], mem['packed'])} | {_x(tot['full3d'], tot['packed'])}"
            + f" | {rate['canvas']:.1f} ({100 * rate['canvas'] / matmul:.0f} %) / "
              f"{rate['packed']:.1f} ({100 * rate['packed'] / matmul:.0f} %)"
            + f" | {res['full3d']['depth_run']}/{width['depth']} |")
    return head + "\n".join(lines) + "\n"


def profiles(rows) -> str:
    """The eager profile of each ST layout (share of CPU time per operator)."""
    text = ""
    for preset, patch, attention, _, res in rows:
        for m in ("canvas", "packed"):
            prof = res[m].get("profile")
            if prof:
                text += (f"\n{m}, preset {preset}, patch {patch}, {attention}: "
                         + ", ".join(f"`{k}` {100 * v:.0f} %" for k, v in prof.items()) + "\n")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--presets", nargs="+", default=["32", "64", "256", "256/8"], choices=list(PRESETS))
    p.add_argument("--patches", nargs="+", default=["2", "1x16"], choices=list(PATCHES))
    p.add_argument("--widths", nargs="+", default=["base"], choices=list(WIDTHS))
    p.add_argument("--attention", nargs="+", default=["sdpa"], choices=["sdpa", "math"])
    p.add_argument("--across", default="position", choices=["position", "time"],
                   help="the packed model's across-plane groups")
    p.add_argument("--batch", type=int, default=2, help="2 = one classifier-free-guidance step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--measure-gflop", type=float, default=1000.0,
                   help="above this forward cost the full-3D model is measured with fewer blocks")
    p.add_argument("--matmul-size", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--quick", action="store_true", help="smoke run: 32 and 64, tiny width, batch 1, one repeat")
    p.add_argument("--compile", action="store_true", help="torch.compile (inductor) every model")
    p.add_argument("--profile", action="store_true", help="also the ST-DiT forwards' top operators")
    p.add_argument("--out", type=Path, help="also write the markdown here")
    args = p.parse_args()
    if args.worker:
        kind, cfg = args.worker
        print(json.dumps(WORKERS[kind](json.loads(cfg))))
        return
    if args.quick:
        args.presets, args.widths, args.batch, args.repeats, args.matmul_size = ["32", "64"], ["tiny"], 1, 1, [1024]

    load_start, matmul_start = os.getloadavg(), matmul_rate(args)
    print(f"fp32 matmul rate: {matmul_start:.1f} GFLOP/s ({args.threads} threads)", flush=True)
    text = ""
    for width_name in args.widths:
        width, rows = WIDTHS[width_name], []
        for preset in args.presets:
            for patch in args.patches:
                geo = preset_geometry(preset, PATCHES[patch])
                for attention in args.attention:
                    res = measure(geo, width, args, attention=attention)
                    print(json.dumps({"preset": preset, "patch": patch, "attention": attention,
                                      **{m: {k: v for k, v in r.items() if k not in ("times", "profile")}
                                         for m, r in res.items()}}), flush=True)
                    rows.append((preset, patch, attention, geo, res))
        text += f"\nwidth {width_name} {width}\n\n"
        matmul = max(matmul_start, matmul_rate(args))
        text += table(rows, width, matmul) + profiles(rows)
    load_end = os.getloadavg()
    header = (f"fp32 matmul rate {matmul:.1f} GFLOP/s (best of start and end), {args.threads} thread(s), batch "
              f"{args.batch}, {'inductor-compiled' if args.compile else 'eager'}, packed across rule "
              f"{args.across!r}, median of {args.repeats} interleaved rounds; load average (1/5/15 min) "
              f"{'/'.join(f'{v:.1f}' for v in load_start)} at start, {'/'.join(f'{v:.1f}' for v in load_end)} at end\n")
    print(header + text)
    if args.out:
        args.out.write_text(header + text)


if __name__ == "__main__":
    main()
