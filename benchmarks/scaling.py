"""How a sampling step grows with the clip: ProAV-DiT's ST-DiT vs the full-3D DiT baseline.

Two sweeps, one model per subprocess (as ``benchmarks/stdit_vs_3d.py``, whose baseline
model, FLOP formulas and memory probe are imported, not copied):

- frames ``--frames`` (default 8 16 32 64) at ``--size-for-frames`` pixels (default 32);
- pixel side ``--sizes`` (default 32 64 128 256) at ``--frames-for-sizes`` frames (16).

Geometry (the same as stdit_vs_3d's presets, with the frame count free): video ``b 3 F R R``
with autoencoder down-sampling ``(1, 4, 4)`` -> latent ``F x R/4 x R/4``; video-like audio
``F`` frames x 64 mel bins x 10 columns with patch ``(1, 4, 2)`` -> latent ``F x 16 x 5``;
4 latent channels. ST-DiT sees the six tri-planes on an ``s x s`` canvas (``s`` = largest
plane side, rounded up to the patch: it grows with ``max(F, R/4)``), so its tokens grow
like ``6 (s/p)^2``; the full-3D baseline attends over all ``F (R/4p)^2`` video plus audio
tokens at once.

One sampling step = one no-grad forward at batch 2 (a classifier-free-guidance pair),
float32, ``--threads`` threads (default 1: the machine is shared), ``AVBLOCKS_TYPECHECK=0``.
Reported per point: median ms of ``--repeats`` forwards after one warm-up, peak extra
resident memory of one forward (``VmHWM - VmRSS`` after a high-water-mark reset, with
``MALLOC_MMAP_THRESHOLD_=65536``), tokens and formula GFLOP. A point whose forward would
exceed ``--max-gflop`` is skipped (not extrapolated) and says so.

``--svg`` adds a third model: the full-3D baseline with
:class:`avblocks.attention.sparse_video.SparseVideoAttention` on every layer from the first
step (spatial block ``(1, h, w)``, temporal block ``(F, 1, 1)``, audio tokens global), i.e.
the cost of one sparse step.

Growth exponent: least-squares slope of ``log(ms)`` (and of ``log(MB)``) against
``log(frames)`` resp. ``log(side)``, over the measured points of each sweep: time ~
size^slope. Small widths by default so the whole run takes a few minutes; ``--width tiny``
/ ``--width base`` (stdit_vs_3d's presets) are opt-in.

Usage:
  python benchmarks/scaling.py                    # small width, both sweeps
  python benchmarks/scaling.py --width base --out scaling.md
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stdit_vs_3d as base  # noqa: E402  (the baseline model, FLOP formulas, memory probe)

WIDTHS = {"small": dict(hidden=64, depth=2, heads=4, patch=2, mlp_ratio=4.0), **base.WIDTHS}
DOWN = 4
AUDIO_FREQ, AUDIO_W = 16, 5  # audio latent per frame: 64 mel bins / 4, 10 columns / 2


def geometry(frames: int, pixels: int, patch: int) -> dict:
    """stdit_vs_3d.geometry with a free frame count (same keys, so its ``flops`` applies)."""
    t, h, w = frames, pixels // DOWN, pixels // DOWN
    ta, fa, wa = frames, AUDIO_FREQ, AUDIO_W
    planes = [(h, w), (t, h), (t, w), (fa, wa), (ta, fa), (ta, wa)]
    side = -(-max(max(p) for p in planes) // patch) * patch
    n_plane = (side // patch) ** 2
    video_tokens = t * (h // patch) * (w // patch)
    audio_tokens = ta * -(-fa // patch) * -(-wa // patch)
    return {
        "video_latent": (t, h, w), "audio_latent": (ta, fa, wa), "planes": planes,
        "side": side, "n_plane": n_plane, "stdit_tokens": 6 * n_plane,
        "video_tokens": video_tokens, "audio_tokens": audio_tokens,
        "full3d_tokens": video_tokens + audio_tokens,
    }


def worker(cfg: dict) -> dict:
    import torch

    from avblocks.dit import STDiT

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    width, b = cfg["width"], cfg["batch"]
    geo = geometry(cfg["frames"], cfg["pixels"], width["patch"])
    if cfg["model"] == "stdit":
        model = STDiT(in_channels=base.LATENT_C, side=geo["side"], frames=6, patch=width["patch"],
                      hidden_size=width["hidden"], depth=width["depth"], num_heads=width["heads"],
                      mlp_ratio=width["mlp_ratio"], num_classes=base.NUM_CLASSES)
        inputs = (torch.randn(b, base.LATENT_C, 6, geo["side"], geo["side"]), torch.rand(b, 6),
                  torch.arange(b) % base.NUM_CLASSES)
    else:
        model = base._full3d_class()(
            video_thw=geo["video_latent"], audio_tfw=geo["audio_latent"], patch=width["patch"],
            hidden=width["hidden"], depth=width["depth"], heads=width["heads"],
            mlp_ratio=width["mlp_ratio"])
        inputs = (torch.randn(b, base.LATENT_C, *geo["video_latent"]),
                  torch.randn(b, base.LATENT_C, *geo["audio_latent"]), torch.rand(b),
                  torch.arange(b) % base.NUM_CLASSES)
    model.eval()
    if cfg.get("svg"):
        from avblocks.attention.sparse_video import SparseVideoAttention

        t, h, w = geo["video_latent"]
        p = width["patch"]
        # every layer and step sparse: the cost of a sparse step (a run keeps its first
        # steps and layers dense)
        SparseVideoAttention(model, grid=(t, h // p, w // p), extra_tokens=geo["audio_tokens"],
                             dense_layers=0, dense_steps=0)
    with torch.inference_mode():
        model(*inputs)
        times = []
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - t0)
        before = base._status()["VmRSS"]
        Path("/proc/self/clear_refs").write_text("5")
        model(*inputs)
        peak = base._status()["VmHWM"] - before
    return {**cfg, "ms": 1e3 * statistics.median(times), "peak_mb": max(peak, 0) / 2**20}


def run_one(cfg: dict, timeout: float) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "AVBLOCKS_TYPECHECK": "0"}
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timeout {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {**cfg, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(lines[-1])


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def sweep(name: str, axis: str, values: list[int], fixed: int, args, width: dict) -> str:
    results = {"stdit": [], "full3d": [], "svg": []}
    for value in values:
        frames, pixels = (value, fixed) if axis == "frames" else (fixed, value)
        geo = geometry(frames, pixels, width["patch"])
        for model in ("stdit", "full3d", *(("svg",) if args.svg else ())):
            cfg = {"model": "full3d" if model == "svg" else model, "svg": model == "svg",
                   "frames": frames, "pixels": pixels, "width": width,
                   "batch": args.batch, "repeats": args.repeats, "threads": args.threads}
            gflop = args.batch * base.flops(cfg["model"], geo, width) / 1e9
            if gflop > args.max_gflop:
                r = {**cfg, "error": f"skipped: {gflop:.0f} GFLOP > --max-gflop"}
            else:
                r = run_one(cfg, args.timeout)
            r.update(value=value, gflop=gflop,
                     tokens=geo["stdit_tokens"] if model == "stdit" else geo["full3d_tokens"])
            if model == "svg" and "error" in r and "skipped" in r["error"]:
                r = {**cfg, "value": value, "gflop": gflop, "tokens": geo["full3d_tokens"],
                     **run_one(cfg, args.timeout)}  # sparse: the dense FLOP cap does not apply
            print(json.dumps({k: v for k, v in r.items() if k != "width"}), flush=True)
            results[model].append(r)
    lines = [
        f"{name} ({axis} sweep, {'size' if axis == 'frames' else 'frames'} {fixed})\n",
        f"| {axis} | tokens ST / 3D | GFLOP ST / 3D | ms/step ST / 3D | x | peak MB ST / 3D |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    if args.svg:
        lines[1] += " ms/step 3D + SVG | x vs 3D |"
        lines[2] += "---:|---:|"
    svg_rows = results["svg"] or [{}] * len(results["stdit"])
    for st, fu, sv in zip(results["stdit"], results["full3d"], svg_rows, strict=True):
        def cell(r, key, f="{:.0f}"):
            return f.format(r[key]) if key in r else "-"
        ratio = f"{fu['ms'] / st['ms']:.1f}" if "ms" in st and "ms" in fu else "-"
        note = "; ".join(r["error"] for r in (st, fu, sv) if "error" in r)
        line = (
            f"| {st['value']} | {st['tokens']} / {fu['tokens']} | {st['gflop']:.2f} / "
            f"{fu['gflop']:.2f} | {cell(st, 'ms')} / {cell(fu, 'ms')} | {ratio} | "
            f"{cell(st, 'peak_mb')} / {cell(fu, 'peak_mb')} |"
        )
        if args.svg:
            svg_ratio = f"{fu['ms'] / sv['ms']:.1f}" if "ms" in sv and "ms" in fu else "-"
            line += f" {cell(sv, 'ms')} | {svg_ratio} |"
        lines.append(line + (f" {note}" if note else ""))
    exps = []
    for model, label in (("stdit", "ST-DiT"), ("full3d", "full 3D")):
        ok = [r for r in results[model] if "ms" in r]
        t = slope([r["value"] for r in ok], [r["ms"] for r in ok])
        m = slope([r["value"] for r in ok], [r["peak_mb"] for r in ok])
        f = slope([r["value"] for r in ok], [r["gflop"] for r in ok])
        exps.append(
            f"{label}: time ~ {axis}^{t:.2f}, memory ~ {axis}^{m:.2f}, FLOPs ~ {axis}^{f:.2f}"
            if t is not None and m is not None else f"{label}: too few points to fit"
        )
    return "\n".join(lines) + "\n\nfitted growth exponents (log-log slopes): " + "; ".join(exps) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--width", choices=list(WIDTHS), default="small")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--size-for-frames", type=int, default=32)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--frames-for-sizes", type=int, default=16)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-gflop", type=float, default=400.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--svg", action="store_true",
                   help="also the full-3D model with Sparse-VideoGen attention on every layer")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    width = WIDTHS[args.width]
    load_start = os.getloadavg()
    parts = [
        sweep("clip length", "frames", args.frames, args.size_for_frames, args, width),
        sweep("frame size", "side", args.sizes, args.frames_for_sizes, args, width),
    ]
    load_end = os.getloadavg()
    text = (
        f"width {args.width} ({width}), batch {args.batch}, {args.threads} thread(s), median of "
        f"{args.repeats}; load average {'/'.join(f'{v:.1f}' for v in load_start)} -> "
        f"{'/'.join(f'{v:.1f}' for v in load_end)}\n\n" + "\n".join(parts)
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
