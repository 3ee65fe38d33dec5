"""ProAV-DiT's ST-DiT (six stacked tri-planes) vs a full-3D DiT on the same sounding clip.

Both denoisers have the same width, depth, heads, MLP ratio and patch side; only the token
layout and the attention pattern differ. One sampling step = one forward at ``--batch``
(default 2: the conditional + unconditional halves of a classifier-free-guidance step),
no gradients, float32, on this machine's CPU.

Clip and latents (16 frames, 4 latent channels per modality):

- video ``b 3 16 R R`` pixels; autoencoder down-sampling ``(1, a, a)`` with ``a = 4`` for the
  ``32``, ``64``, ``256`` presets (latent ``16 x R/4 x R/4``) and ``a = 8`` for ``256/8``
  (latent ``16 x 32 x 32``);
- audio as video-like audio ``b 1 16 64 10`` (16 frames x 64 mel bins x 10 columns per
  frame) with autoencoder patch ``(1, 4, 2)``: latent ``16 x 16 x 5`` for every preset;
- tri-plane (ST-DiT input): video ``hw: h'w'``, ``th: t'h'``, ``tw: t'w'``; audio
  ``hw: f'w''``, ``th: t'f'``, ``tw: t'w''``; each zero-padded onto an ``s x s`` canvas,
  ``s`` = the largest plane side (rounded up to the patch), stacked as ``f = 6`` frames;
  ST-DiT tokens ``6 * (s/p)^2``;
- full 3D (baseline input): the video latent with patch ``(1, p, p)`` plus the audio latent
  with patch ``(1, p, p)`` (its width 5 zero-padded to 6), concatenated into one sequence
  with full attention over all of it (DiT blocks), fixed 3D sin-cos positions per modality.

FLOPs (forward, one multiply-add = 2 FLOPs, per sample; ``d`` width, ``r`` MLP ratio):

- DiT block on ``n`` tokens: linears ``2 n (4 d^2 [qkv + proj] + 2 r d^2 [MLP])`` plus
  attention ``4 n^2 d`` (``q k^T`` and ``a v``);
- ST-DiT block on ``f`` planes of ``n_p`` tokens (``N = f n_p``): linears
  ``2 N (4 d^2 [spatial qkv + proj] + 4 d^2 [temporal qkv + proj] + 2 r d^2 [MLP])`` plus
  spatial attention ``4 f n_p^2 d`` plus temporal attention ``4 n_p f^2 d``;
- plus patch embedding ``2 N (p^2 c) d`` and final layer ``2 N d (p^2 c)``; adaLN and the
  conditioning MLPs run per sample (per plane for ST-DiT) and are counted
  (``2 * 6 d * d`` resp. ``2 * 9 d * d`` per block and row); norms, softmax, GELU are not.

Measurements (every model in its **own subprocess**, ``AVBLOCKS_TYPECHECK=0``,
``--threads`` intra-op threads):

- time: median of ``--repeats`` forwards after one warm-up forward (``torch.inference_mode``);
- peak memory: extra resident memory during one forward, ``VmHWM - VmRSS`` read from
  ``/proc/self/status`` after resetting the high-water mark (``/proc/self/clear_refs``)
  just before the call, with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed buffers go back
  to the OS and every call starts from the same baseline. This is the activation memory of a
  sampling step; the weights (``4 bytes x parameters``) are reported apart and the "total"
  ratio uses weights + activations;
- when a model's forward exceeds ``--measure-gflop`` (full-3D at 256), it is measured with
  fewer blocks ``k`` and its time extrapolated linearly to the full depth
  (``time * depth / k``; blocks are identical, embeddings/final layer are < 1 % of the work).
  Peak activation memory of a no-grad forward does not grow with depth (a block's
  intermediates are freed before the next block), weights are scaled exactly from the
  per-block parameter count. Rows where this happened say ``k/depth`` in the "blocks run"
  column;
- achieved FLOP/s = formula FLOPs / median time, as a fraction of the fp32 matmul rate of
  this machine measured in the same run (best of square ``--matmul-size`` matmuls, same
  threads, measured at the start and at the end of the run; the higher is used);
- threads: on a machine shared with other jobs, use ``--threads 1``: with more OpenMP
  threads than free cores every parallel region waits for a descheduled thread at its
  barrier (we saw 15 ms per tiny elementwise op, 3-6x slower forwards at 2 threads);
- ``--attention math`` runs the reference backend that materialises the ``n x n`` score
  matrix (skipped where it would exceed ``--math-limit-gb``); the default ``sdpa`` backend
  is PyTorch's fused CPU kernel whose memory is linear in ``n``.

Usage:
  quick smoke run:  python benchmarks/stdit_vs_3d.py --quick
  full run:         python benchmarks/stdit_vs_3d.py --out benchmarks/stdit_vs_3d.md
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
WIDTHS = {
    "base": dict(hidden=384, depth=12, heads=6, patch=2, mlp_ratio=4.0),
    "tiny": dict(hidden=128, depth=4, heads=4, patch=2, mlp_ratio=4.0),
}
NUM_CLASSES = 9


# ---- geometry and FLOPs ---------------------------------------------------------------------


def geometry(preset: str, patch: int) -> dict:
    """Latent sizes, planes, canvas side and token counts of one preset."""
    pixels, down = PRESETS[preset]
    t, h, w = FRAMES, pixels // down, pixels // down
    ta, fa, wa = AUDIO_LATENT
    planes = [(h, w), (t, h), (t, w), (fa, wa), (ta, fa), (ta, wa)]
    side = -(-max(max(p) for p in planes) // patch) * patch
    n_plane = (side // patch) ** 2
    video_tokens = t * (h // patch) * (w // patch)
    audio_tokens = ta * -(-fa // patch) * -(-wa // patch)
    return {
        "video_latent": (t, h, w),
        "audio_latent": AUDIO_LATENT,
        "planes": planes,
        "side": side,
        "n_plane": n_plane,
        "stdit_tokens": 6 * n_plane,
        "video_tokens": video_tokens,
        "audio_tokens": audio_tokens,
        "full3d_tokens": video_tokens + audio_tokens,
    }


def flops(model: str, geo: dict, width: dict, depth: int | None = None) -> float:
    """Forward FLOPs per sample by the formulas of the module docstring."""
    d, r, p = width["hidden"], width["mlp_ratio"], width["patch"]
    depth = width["depth"] if depth is None else depth
    io = 2 * p * p * LATENT_C * d * 2  # patch embedding + final layer, per token
    cond = 2 * 256 * d + 2 * d * d  # timestep MLP per row
    if model == "stdit":
        f, n_p = 6, geo["n_plane"]
        n = f * n_p
        block = 2 * n * (8 * d * d + 2 * r * d * d) + 4 * f * n_p**2 * d + 4 * n_p * f**2 * d
        block += f * 2 * 9 * d * d  # adaLN per plane
        return depth * block + n * io + f * (cond + 2 * 2 * d * d)
    n = geo["full3d_tokens"]
    block = 2 * n * (4 * d * d + 2 * r * d * d) + 4 * n * n * d + 2 * 6 * d * d
    return depth * block + n * io + cond + 2 * 2 * d * d


def score_bytes(model: str, geo: dict, width: dict, batch: int) -> int:
    """Bytes of one block's float32 attention score matrix if materialised (math backend)."""
    h = width["heads"]
    if model == "stdit":
        return 4 * batch * h * 6 * geo["n_plane"] ** 2
    return 4 * batch * h * geo["full3d_tokens"] ** 2


# ---- worker: one model per process ------------------------------------------------------------


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
            self.p = patch
            self.video_thw, self.audio_tfw = video_thw, audio_tfw
            self.audio_w = -(-audio_tfw[2] // patch) * patch
            pp = (1, patch, patch)
            self.video_embed = PatchEmbed3d(in_channels=LATENT_C, hidden_size=hidden, patch_size=pp)
            self.audio_embed = PatchEmbed3d(in_channels=LATENT_C, hidden_size=hidden, patch_size=pp)
            vg = (video_thw[0], video_thw[1] // patch, video_thw[2] // patch)
            ag = (audio_tfw[0], -(-audio_tfw[1] // patch), self.audio_w // patch)
            self.n_video = math.prod(vg)
            pos = torch.cat([table(hidden, vg), table(hidden, ag)])
            self.register_buffer("pos", pos, persistent=False)
            self.modality = nn.Parameter(torch.zeros(2, hidden))
            self.t_embedder = TimestepEmbedder(hidden_size=hidden)
            self.y_embedder = LabelEmbedder(num_classes=NUM_CLASSES, hidden_size=hidden)
            self.blocks = nn.ModuleList(
                DiTBlock(hidden_size=hidden, num_heads=heads, mlp_ratio=mlp_ratio)
                for _ in range(depth)
            )
            self.final_layer = FinalLayer(hidden_size=hidden, patch_dim=patch * patch * LATENT_C)

        def forward(self, video, audio, t, y):
            audio = F.pad(audio, (0, self.audio_w - audio.shape[-1]))
            tv, ta = self.video_embed(video), self.audio_embed(audio)
            x = torch.cat([tv + self.modality[0], ta + self.modality[1]], dim=1) + self.pos
            c = self.t_embedder(t * 1000.0) + self.y_embedder(y)
            for block in self.blocks:
                x = block(x, c)
            x = self.final_layer(x, c)
            v = unpatchify3d(x[:, : self.n_video], (1, self.p, self.p), self.video_thw)
            a_size = (*self.audio_tfw[:2], self.audio_w)
            a = unpatchify3d(x[:, self.n_video :], (1, self.p, self.p), a_size)
            return v, a[..., : self.audio_tfw[2]]

    return Full3DDiT


def worker(cfg: dict) -> dict:
    import torch

    from avblocks.attention import attention_backend
    from avblocks.dit import STDiT

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    if cfg["model"] == "matmul":
        n = cfg["size"]
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        return {**cfg, "gflops": 2 * n**3 / best / 1e9}

    geo, width, b = geometry(cfg["preset"], cfg["width"]["patch"]), cfg["width"], cfg["batch"]
    depth = cfg["depth_run"]
    if cfg["model"] == "stdit":
        model = STDiT(
            in_channels=LATENT_C, side=geo["side"], frames=6, patch=width["patch"],
            hidden_size=width["hidden"], depth=depth, num_heads=width["heads"],
            mlp_ratio=width["mlp_ratio"], num_classes=NUM_CLASSES,
        )
        inputs = (
            torch.randn(b, LATENT_C, 6, geo["side"], geo["side"]),
            torch.rand(b, 6),
            torch.arange(b) % NUM_CLASSES,
        )
    else:
        model = _full3d_class()(
            video_thw=geo["video_latent"], audio_tfw=geo["audio_latent"], patch=width["patch"],
            hidden=width["hidden"], depth=depth, heads=width["heads"],
            mlp_ratio=width["mlp_ratio"],
        )
        inputs = (
            torch.randn(b, LATENT_C, *geo["video_latent"]),
            torch.randn(b, LATENT_C, *geo["audio_latent"]),
            torch.rand(b),
            torch.arange(b) % NUM_CLASSES,
        )
    model.eval()
    if cfg.get("compile"):
        model = torch.compile(model)  # inductor; the first (warm-up) call includes compiling
    params = sum(p.numel() for p in model.parameters())
    block_params = sum(p.numel() for p in getattr(model, "_orig_mod", model).blocks[0].parameters())
    with torch.inference_mode(), attention_backend(cfg["attention"]):
        t0 = time.perf_counter()
        out = model(*inputs)
        first = time.perf_counter() - t0
        del out
        times = []
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            out = model(*inputs)
            times.append(time.perf_counter() - t0)
            del out
        profile = None
        if cfg.get("profile"):
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                model(*inputs)
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
            profile = {e.key: round(e.self_cpu_time_total / total, 3) for e in top}
        before = _status()["VmRSS"]
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        out = model(*inputs)
        peak = _status()["VmHWM"] - before
        del out
    return {
        **cfg,
        "time_s": statistics.median(times),
        "min_time_s": min(times),
        "first_s": first,
        "profile": profile,
        "peak_bytes": max(peak, 0),
        "params_run": params,
        "block_params": block_params,
    }


# ---- driver -----------------------------------------------------------------------------------


def run_one(cfg: dict, timeout: float) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "AVBLOCKS_TYPECHECK": "0"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = f"{root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(cfg)],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timeout {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {**cfg, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(lines[-1])


def full_depth(r: dict) -> dict:
    """Extrapolate a reduced-depth measurement to the full depth (see module docstring)."""
    depth, k = r["width"]["depth"], r["depth_run"]
    return {
        "time_s": r["time_s"] * depth / k,
        "weights_bytes": 4 * (r["params_run"] + (depth - k) * r["block_params"]),
        "peak_bytes": r["peak_bytes"],
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}" if b else "-"


def table(pairs: list[tuple[dict, dict]], matmul: float) -> str:
    head = (
        "| preset | width | attention | video latent | s | tokens ST / 3D | x | "
        "GFLOP ST / 3D | x | ms/step ST / 3D | x | act. MB ST / 3D | x | "
        "weights MB ST / 3D | total x | scores MB ST / 3D | ST GFLOP/s (% matmul) | 3D GFLOP/s "
        "| 3D blocks run |\n"
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        "---:|\n"
    )
    rows = []
    for st, fu in pairs:
        width, b = st["width"], st["batch"]
        geo = geometry(st["preset"], width["patch"])
        lead = (
            f"| {st['preset']} | {st['width_name']} | {st['attention']} "
            f"| {'x'.join(map(str, geo['video_latent']))} | {geo['side']} "
            f"| {geo['stdit_tokens']} / {geo['full3d_tokens']} "
            f"| {geo['full3d_tokens'] / geo['stdit_tokens']:.1f} "
        )
        gf_st, gf_fu = (b * flops(m, geo, width) / 1e9 for m in ("stdit", "full3d"))
        lead += f"| {gf_st:.1f} / {gf_fu:.1f} | {gf_fu / gf_st:.1f} "
        errors = [r.get("error") for r in (st, fu) if "error" in r]
        if errors:
            rows.append(lead + f"| {'; '.join(errors)} | | | | | | | | | |")
            continue
        a, c = full_depth(st), full_depth(fu)
        rate_st = gf_st / a["time_s"]
        rate_fu = gf_fu / c["time_s"]
        tot_st, tot_fu = a["peak_bytes"] + a["weights_bytes"], c["peak_bytes"] + c["weights_bytes"]
        rows.append(
            lead
            + f"| {a['time_s'] * 1e3:.0f} / {c['time_s'] * 1e3:.0f} "
            f"| {_ratio(c['time_s'], a['time_s'])} "
            f"| {a['peak_bytes'] / 2**20:.0f} / {c['peak_bytes'] / 2**20:.0f} "
            f"| {_ratio(c['peak_bytes'], a['peak_bytes'])} "
            f"| {a['weights_bytes'] / 2**20:.0f} / {c['weights_bytes'] / 2**20:.0f} "
            f"| {_ratio(tot_fu, tot_st)} "
            f"| {score_bytes('stdit', geo, width, b) / 2**20:.0f} / "
            f"{score_bytes('full3d', geo, width, b) / 2**20:.0f} "
            f"| {rate_st:.1f} ({100 * rate_st / matmul:.0f} %) | {rate_fu:.1f} "
            f"| {fu['depth_run']}/{width['depth']} |"
        )
    return head + "\n".join(rows) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--presets", nargs="+", default=["32", "64", "256", "256/8"],
                   choices=list(PRESETS))
    p.add_argument("--widths", nargs="+", default=["base"], choices=list(WIDTHS))
    p.add_argument("--attention", nargs="+", default=["sdpa"], choices=["sdpa", "math"])
    p.add_argument("--batch", type=int, default=2, help="2 = one classifier-free-guidance step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--measure-gflop", type=float, default=1000.0,
                   help="above this forward cost a model is measured with fewer blocks")
    p.add_argument("--math-limit-gb", type=float, default=4.0)
    p.add_argument("--matmul-size", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 32 and 64 presets, tiny width, batch 1, one repeat")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (inductor) both models; warm-up includes compiling")
    p.add_argument("--profile", action="store_true",
                   help="also print the ST-DiT forward's top operators (share of CPU time)")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.presets, args.widths, args.batch, args.repeats = ["32", "64"], ["tiny"], 1, 1
        args.matmul_size = [1024]

    def matmul_rate() -> float:
        return max(
            run_one({"model": "matmul", "size": n, "threads": args.threads}, args.timeout)
            .get("gflops", 0.0)
            for n in args.matmul_size
        )

    load_start = os.getloadavg()
    matmul_start = matmul_rate()
    print(f"fp32 matmul rate: {matmul_start:.1f} GFLOP/s ({args.threads} threads)", flush=True)
    pairs = []
    for width_name in args.widths:
        width = WIDTHS[width_name]
        for preset in args.presets:
            geo = geometry(preset, width["patch"])
            for attention in args.attention:
                pair = []
                for model in ("stdit", "full3d"):
                    cfg = {
                        "model": model, "preset": preset, "width": width,
                        "width_name": width_name, "attention": attention,
                        "batch": args.batch, "repeats": args.repeats, "threads": args.threads,
                        "profile": args.profile and model == "stdit", "compile": args.compile,
                    }
                    scores = score_bytes(model, geo, width, args.batch)
                    gflop = args.batch * flops(model, geo, width) / 1e9
                    per_block = args.batch * (flops(model, geo, width, 1) - flops(model, geo, width, 0))
                    k = width["depth"]
                    if gflop > args.measure_gflop:
                        k = max(1, min(k, int(args.measure_gflop * 1e9 / per_block)))
                    cfg["depth_run"] = k
                    if attention == "math" and scores > args.math_limit_gb * 2**30:
                        r = {**cfg, "error": f"math skipped: scores {scores / 2**30:.1f} GB/block"}
                    else:
                        t0 = time.perf_counter()
                        r = run_one(cfg, args.timeout)
                        r["wall_s"] = time.perf_counter() - t0
                    print(json.dumps({k2: v for k2, v in r.items() if k2 != "width"}), flush=True)
                    pair.append(r)
                pairs.append(tuple(pair))
    load_end = os.getloadavg()
    matmul_end = matmul_rate()
    matmul = max(matmul_start, matmul_end)  # the machine's rate: the less disturbed reading
    text = (
        f"fp32 matmul rate {matmul:.1f} GFLOP/s (best of start {matmul_start:.1f} / end "
        f"{matmul_end:.1f}), {args.threads} threads, batch {args.batch}, "
        f"{'inductor-compiled, ' if args.compile else 'eager, '}"
        f"median of {args.repeats}; load average (1/5/15 min) at start "
        f"{'/'.join(f'{v:.1f}' for v in load_start)}, at end "
        f"{'/'.join(f'{v:.1f}' for v in load_end)}\n\n" + table(pairs, matmul)
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
