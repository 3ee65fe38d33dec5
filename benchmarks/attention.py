"""Attention benchmark: every backend on every mask family, as ratios to dense SDPA.

For each sequence length ``N`` (tokens of a ``16 x s x s`` video grid, ``s = sqrt(N / 16)``)
and each mask, every backend (math, sdpa, flex) runs in its **own subprocess**:

- time: median of ``--repeats`` forward calls after one warm-up call (the warm-up includes
  FlexAttention's compile, reported separately as "first call");
- peak memory: extra resident memory during one call, measured as ``VmHWM - VmRSS`` after
  resetting the high-water mark through ``/proc/self/clear_refs`` just before the call, in a
  second process started with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed buffers go back to
  the OS and each call starts from the same baseline (the timing process runs without it). Inputs and the mask structure (SDPA's dense boolean
  matrix, flex's BlockMask, already cached) are *not* included; the structure's own size is
  the "mask MB" column;
- FLOPs: ``4 * b * h * nq * nk * d`` for dense attention, times the mask density (the
  useful work) for masked rows; achieved GFLOP/s = useful FLOPs / time, compared with the
  fp32 matmul rate measured in the same run (a square ``--matmul-size`` matmul, best of 5
  before and of 5 after the runs).

Math is skipped when its ``b h nq nk`` float32 score matrix exceeds ``--math-limit-gb``.

Usage (quick): ``python benchmarks/attention.py --seq 1024 --repeats 1``
Full: ``python benchmarks/attention.py --seq 1024 4096 16384 --out benchmarks/attention.md``
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


def mask_specs(n: int) -> dict[str, str]:
    """Mask name -> constructor expression for an N-token ``16 x s x s`` grid."""
    s = math.isqrt(n // FRAMES)
    if FRAMES * s * s != n or s % 4:
        raise SystemExit(f"--seq {n}: needs N = 16 * s * s with s a multiple of 4")
    g = f"({FRAMES}, {s}, {s})"
    return {
        "dense (no mask)": "None",
        "frame-causal": f"FrameCausalMask({FRAMES}, {s * s})",
        "block-window t/4": f"BlockWindowMask({g}, (4, {s}, {s}))",
        "block-window t/8": f"BlockWindowMask({g}, (2, {s}, {s}))",
        "spatial-window 2x2": f"BlockWindowMask({g}, ({FRAMES}, {s // 2}, {s // 2}))",
        "sliding-tile 3x3x3": f"SlidingTileMask({g}, (2, {s // 4}, {s // 4}), (3, 3, 3))",
        "sliding-tile tiled": (
            f"SlidingTileMask({g}, (2, {s // 4}, {s // 4}), (3, 3, 3), token_order='tiled')"
        ),
        "group x4": f"GroupMask.uniform(4, {n // 4}, {n // 4})",
        "random-shift w4": f"RandomShiftMask({FRAMES}, {s * s}, {FRAMES}, {s * s}, 1, 4)",
    }


# ---- worker: one (N, mask, backend) per process ---------------------------------------------


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def worker(cfg: dict) -> dict:
    import torch

    from avblocks.attention import (  # noqa: F401  (names used by eval)
        BlockWindowMask,
        FrameCausalMask,
        FullMask,
        GroupMask,
        RandomShiftMask,
        SlidingTileMask,
        attend,
    )

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    n, b, h, d = cfg["seq"], cfg["batch"], cfg["heads"], cfg["head_dim"]
    mask = eval(cfg["mask"])  # noqa: S307  (our own spec strings)
    q, k, v = (torch.randn(b, h, n, d) for _ in range(3))
    t0 = time.perf_counter()
    mask_bytes = 0
    if mask is not None and cfg["backend"] in ("sdpa", "math"):
        mask_bytes = mask.dense().numel()
    elif cfg["backend"].startswith("flex"):
        bm = (mask or FullMask(n, n)).block_mask(128)
        mask_bytes = (
            sum(
                t.numel() * t.element_size()
                for t in (
                    bm.kv_num_blocks,
                    bm.kv_indices,
                    bm.full_kv_num_blocks,
                    bm.full_kv_indices,
                )
            )
            * 2
        )  # plus the transposed copies used by the backward
    setup_s = time.perf_counter() - t0
    density = 1.0 if mask is None else mask.density
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = attend(q, k, v, mask, backend=cfg["backend"])
        first_s = time.perf_counter() - t0
        del out
        if cfg["probe"] == "memory":
            before = _status()["VmRSS"]
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            out = attend(q, k, v, mask, backend=cfg["backend"])
            peak = _status()["VmHWM"] - before
            return {"peak_bytes": max(peak, 0)}
        times = []
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            out = attend(q, k, v, mask, backend=cfg["backend"])
            times.append(time.perf_counter() - t0)
            del out
    return {
        **cfg,
        "density": density,
        "time_s": statistics.median(times),
        "time_min_s": min(times),
        "first_call_s": first_s,
        "setup_s": setup_s,
        "mask_bytes": mask_bytes,
    }


def matmul_gflops(size: int, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


# ---- driver ---------------------------------------------------------------------------------


def _worker_process(cfg: dict, timeout: float, memory_probe: bool) -> dict:
    env = {**os.environ, "AVBLOCKS_TYPECHECK": "0"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if memory_probe:  # freed buffers go back to the OS; it slows some calls, so never while timing
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = f"{root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    probe = {**cfg, "probe": "memory" if memory_probe else "time"}
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(probe)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(lines[-1])


def run_one(cfg: dict, timeout: float) -> dict:
    """Time in one process, peak memory in a second one (each with the allocator it needs)."""
    timed = _worker_process(cfg, timeout, memory_probe=False)
    if "error" in timed:
        return {**cfg, **timed}
    return {**timed, **_worker_process(cfg, timeout, memory_probe=True)}


def table(results: list[dict], peak_gflops: float) -> str:
    head = (
        "| N | mask | density | backend | time ms | min ms | x dense SDPA | peak MB | x dense SDPA "
        "| mask MB | GFLOP | GFLOP/s | % matmul | first call s |\n"
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    base = {
        r["seq"]: r
        for r in results
        if r["mask"] == "None" and r["backend"] == "sdpa" and "error" not in r
    }
    rows = []
    for r in results:
        name = f"{r['mask_name']}"
        if "error" in r:
            rows.append(
                f"| {r['seq']} | {name} | | {r['backend']} | {r['error']} | | | | | | | | | |"
            )
            continue
        ref = base.get(r["seq"])
        flop = 4 * r["batch"] * r["heads"] * r["seq"] ** 2 * r["head_dim"] * r["density"]
        rate = flop / r["time_s"] / 1e9
        t_ratio = f"{r['time_s'] / ref['time_s']:.2f}" if ref else "-"
        t_min = f"{r['time_min_s'] * 1e3:.1f}" if "time_min_s" in r else "-"
        m_ratio = f"{r['peak_bytes'] / ref['peak_bytes']:.2f}" if ref and ref["peak_bytes"] else "-"
        rows.append(
            f"| {r['seq']} | {name} | {r['density']:.3f} | {r['backend']} "
            f"| {r['time_s'] * 1e3:.1f} | {t_min} | {t_ratio} | {r['peak_bytes'] / 2**20:.0f} "
            f"| {m_ratio} "
            f"| {r['mask_bytes'] / 2**20:.1f} | {flop / 1e9:.1f} | {rate:.1f} "
            f"| {100 * rate / peak_gflops:.0f} | {r['first_call_s']:.1f} |"
        )
    return head + "\n".join(rows) + "\n"


def summary(results: list[dict]) -> str:
    """One row per (N, mask), backends side by side: time and peak memory / dense SDPA."""
    backends = list(dict.fromkeys(r["backend"] for r in results))
    base = {
        r["seq"]: r
        for r in results
        if r["mask"] == "None" and r["backend"] == "sdpa" and "error" not in r
    }
    head = (
        "| N | mask | density | "
        + " | ".join(f"{b} time x" for b in backends)
        + " | "
        + " | ".join(f"{b} mem x" for b in backends)
        + " |\n|---:|---|---:|"
        + "---:|" * (2 * len(backends))
        + "\n"
    )
    rows = {}
    for r in results:
        row = rows.setdefault((r["seq"], r["mask_name"]), {"density": None})
        ref = base.get(r["seq"])
        if "error" in r or ref is None:
            row[r["backend"]] = ("-", "-")
            continue
        row["density"] = r["density"]
        mem = f"{r['peak_bytes'] / ref['peak_bytes']:.2f}" if ref["peak_bytes"] else "-"
        row[r["backend"]] = (f"{r['time_s'] / ref['time_s']:.2f}", mem)
    lines = []
    for (n, name), row in rows.items():
        cells = [row.get(b, ("-", "-")) for b in backends]
        density = "-" if row["density"] is None else f"{row['density']:.3f}"
        lines.append(
            f"| {n} | {name} | {density} | "
            + " | ".join(c[0] for c in cells)
            + " | "
            + " | ".join(c[1] for c in cells)
            + " |"
        )
    return head + "\n".join(lines) + "\n"


def render(results: list[dict], peak: float, args: argparse.Namespace) -> str:
    return (
        f"fp32 matmul rate (measured, {args.matmul_size}^3, {args.threads} threads): "
        f"{peak:.1f} GFLOP/s; batch {args.batch}, heads {args.heads}, head dim {args.head_dim}, "
        f"fp32, forward only (inference mode), median of {args.repeats}.\n\n"
        "Ratios to dense SDPA (no mask) at the same N (time x, mem x: lower is better):\n\n"
        + summary(results)
        + "\nDetails:\n\n"
        + table(results, peak)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seq", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backends", nargs="+", default=["math", "sdpa", "flex"])
    p.add_argument("--masks", nargs="*", default=None, help="subset of mask names (default all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--math-limit-gb", type=float, default=2.0)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    p.add_argument("--from-json", type=Path, default=None, help="re-render a saved run")
    p.add_argument("--matmul-gflops", type=float, default=None, help="with an old --from-json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.from_json:  # re-render a saved run without re-running it
        saved = json.loads(args.from_json.read_text())
        if isinstance(saved, list):  # older format: --matmul-gflops must be given
            saved = {"results": saved, "matmul_gflops": args.matmul_gflops}
        print(render(saved["results"], saved["matmul_gflops"], args))
        return

    peak = matmul_gflops(args.matmul_size, args.threads)
    print(f"fp32 matmul {args.matmul_size}^3 on {args.threads} threads: {peak:.1f} GFLOP/s")
    results = []
    for n in args.seq:
        for name, spec in mask_specs(n).items():
            if args.masks and name not in args.masks:
                continue
            for backend in args.backends:
                score_bytes = 4 * args.batch * args.heads * n * n
                cfg = dict(
                    seq=n,
                    batch=args.batch,
                    heads=args.heads,
                    head_dim=args.head_dim,
                    mask=spec,
                    mask_name=name,
                    backend=backend,
                    repeats=args.repeats,
                    threads=args.threads,
                )
                if backend == "math" and score_bytes > args.math_limit_gb * 2**30:
                    r = {**cfg, "error": f"skipped: {score_bytes / 2**30:.1f} GB scores"}
                else:
                    r = run_one(cfg, args.timeout)
                results.append(r)
                shown = r.get("error") or f"{r['time_s'] * 1e3:.1f} ms"
                print(f"N={n:>6} {name:<20} {backend:<6} {shown}", flush=True)
    # Shared machine: take the better of the rates measured before and after the runs.
    peak = max(peak, matmul_gflops(args.matmul_size, args.threads))
    md = render(results, peak, args)
    print(md)
    if args.out:
        args.out.write_text(md)
        args.out.with_suffix(".json").write_text(
            json.dumps({"matmul_gflops": peak, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
