"""How a sampling step grows with the clip: ST-DiT (canvas and packed planes) vs the full-3D DiT.

Two sweeps, measured as ``benchmarks/stdit_vs_3d.py`` measures (its models, FLOP formulas and
workers are imported, not copied: time with the models interleaved in one process and no
allocator setting, memory one model per process with ``MALLOC_MMAP_THRESHOLD_=65536``):

- frames ``--frames`` (default 8 16 32 64 128 256) at ``--size-for-frames`` pixels (32);
- pixel side ``--sizes`` (default 32 64 128 256) at ``--frames-for-sizes`` frames (16).

Geometry: video ``b 3 F R R`` with autoencoder down-sampling ``(1, 4, 4)`` -> latent
``F x R/4 x R/4``; video-like audio ``F`` frames x 64 mel bins x 10 columns with patch
``(1, 4, 2)`` -> latent ``F x 16 x 5``; 4 latent channels. The canvas ST-DiT pads the six
planes onto one ``s x s`` square (``s`` grows with ``max(F, R/4)``, so with long clips its
tokens grow like ``F^2``); the packed ST-DiT has no padding token, and with ``--time-window``
its within-plane attention on the time planes is local (tiles of that many token rows, each
query seeing three tiles), so its cost grows linearly in ``F`` beyond the window; the full-3D
baseline attends over all ``F (R/4p)^2`` video plus audio tokens at once. ``--svg`` adds the
full-3D model with Sparse-VideoGen attention on every layer (the cost of one sparse step).

One sampling step = one no-grad forward at batch 2, float32, ``--threads`` threads (default
1: the machine is shared), ``AVBLOCKS_TYPECHECK=0``. Reported per point: median ms over
``--repeats`` interleaved rounds, peak extra resident memory of one forward, tokens, formula
GFLOP; a model whose forward would exceed ``--max-gflop`` is skipped (not extrapolated).
Growth exponent: least-squares slope of ``log(ms)`` (and of ``log(MB)``) against
``log(frames)`` resp. ``log(side)`` over the measured points of each sweep.

Usage:
  python benchmarks/scaling.py --svg                # width 64, 2 blocks, both sweeps
  python benchmarks/scaling.py --patches 1x16       # the demo's row patches
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stdit_vs_3d as base  # noqa: E402  (models, FLOP formulas, workers)

WIDTHS = {"small": dict(hidden=64, depth=2, heads=4, mlp_ratio=4.0), **base.WIDTHS}
DOWN = 4
AUDIO_FREQ, AUDIO_W = 16, 5  # audio latent per frame: 64 mel bins / 4, 10 columns / 2


def point_geometry(frames: int, pixels: int, patch: tuple[int, int]) -> dict:
    return base.geometry((frames, pixels // DOWN, pixels // DOWN), (frames, AUDIO_FREQ, AUDIO_W), patch)


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def sweep(axis: str, values: list[int], fixed: int, patch: str, args, width: dict) -> str:
    models = ("canvas", "packed", "full3d", *(("svg",) if args.svg else ()))
    points = []
    for value in values:
        frames, pixels = (value, fixed) if axis == "frames" else (fixed, value)
        geo = point_geometry(frames, pixels, base.PATCHES[patch])
        # the packed model is never skipped (its FLOPs need its layout; they stay far below the others')
        run = [m for m in models if m in ("packed", "svg")
               or args.batch * base.flops(m, geo, width) / 1e9 <= args.max_gflop]
        res = base.measure(geo, width, args, models=run, time_window=args.time_window)
        for m in models:
            if m not in res:  # its formula FLOPs are what skipped it: they still go in the table
                res[m] = {"error": "skipped: > --max-gflop", "gflop": args.batch * base.flops(m, geo, width) / 1e9}
        print(json.dumps({"axis": axis, "value": value, **{m: {k: v for k, v in r.items() if k != "times"}
                                                            for m, r in res.items()}}), flush=True)
        points.append((value, geo, res))
    other = "size" if axis == "frames" else "frames"
    lines = [f"{axis} sweep ({other} {fixed}, patch {patch})\n",
             "| " + axis + " | tokens canvas / packed / 3D | GFLOP canvas / packed / 3D | ms canvas / packed / 3D"
             + (" / 3D+SVG" if args.svg else "") + " | x 3D/canvas | x 3D/packed | peak MB canvas / packed / 3D |",
             "|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(r, key, scale=1.0):
        return f"{scale * r[key]:.0f}" if r.get(key) is not None else "-"

    for value, geo, res in points:
        ms = {m: res[m]["time_s"] * 1e3 if "time_s" in res[m] else None for m in models}
        ratio = {m: f"{ms['full3d'] / ms[m]:.1f}" if ms.get(m) and ms["full3d"] else "-" for m in ("canvas", "packed")}
        note = "; ".join(f"{m}: {res[m]['error']}" for m in models if "error" in res[m])
        lines.append(
            f"| {value} | {geo['canvas_tokens']} / {geo['packed_tokens']} / {geo['full3d_tokens']} | "
            + " / ".join(f"{res[m].get('gflop', 0):.2f}" for m in ("canvas", "packed", "full3d")) + " | "
            + " / ".join(f"{ms[m]:.0f}" if ms[m] else "-" for m in models)
            + f" | {ratio['canvas']} | {ratio['packed']} | "
            + " / ".join(cell(res[m], "peak_bytes", 2 ** -20) for m in ("canvas", "packed", "full3d")) + " |"
            + (f" {note}" if note else ""))
    exps = []
    for m, label in (("canvas", "canvas ST-DiT"), ("packed", "packed ST-DiT"), ("full3d", "full 3D")):
        ok = [(v, res[m]) for v, _, res in points if "time_s" in res[m]]
        t = slope([v for v, _ in ok], [r["time_s"] for _, r in ok])
        mem = slope([v for v, r in ok if r.get("peak_bytes")], [r["peak_bytes"] for _, r in ok if r.get("peak_bytes")])
        exps.append(f"{label}: time ~ {axis}^{t:.2f}" + (f", memory ~ {axis}^{mem:.2f}" if mem is not None else "")
                    if t is not None else f"{label}: too few points")
    return "\n".join(lines) + "\n\nfitted growth exponents (log-log slopes): " + "; ".join(exps) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--width", choices=list(WIDTHS), default="small")
    p.add_argument("--patches", nargs="+", default=["2"], choices=list(base.PATCHES))
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    p.add_argument("--size-for-frames", type=int, default=32)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--frames-for-sizes", type=int, default=16)
    p.add_argument("--across", default="position", choices=["position", "time"])
    p.add_argument("--time-window", type=int, default=16,
                   help="the packed model's local time attention, in token rows (0: full)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-gflop", type=float, default=400.0)
    p.add_argument("--measure-gflop", type=float, default=float("inf"), help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--svg", action="store_true", help="also the full-3D model with Sparse-VideoGen attention")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    args.compile, args.profile = False, False
    args.time_window = args.time_window or None
    width = WIDTHS[args.width]
    load_start = os.getloadavg()
    parts = []
    for patch in args.patches:
        parts.append(sweep("frames", args.frames, args.size_for_frames, patch, args, width))
        parts.append(sweep("side", args.sizes, args.frames_for_sizes, patch, args, width))
    load_end = os.getloadavg()
    text = (
        f"width {args.width} ({width}), batch {args.batch}, {args.threads} thread(s), median of {args.repeats} "
        f"interleaved rounds, packed across {args.across!r}, time window {args.time_window} token rows; load "
        f"average {'/'.join(f'{v:.1f}' for v in load_start)} -> {'/'.join(f'{v:.1f}' for v in load_end)}\n\n"
        + "\n".join(parts)
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
