"""Where the ST-DiT forward's time goes against the matmul rate: its own Linears, timed alone.

    python benchmarks/matmul_ceiling.py --presets 64 --patches 2 1x16 --threads 1 --out /tmp/ceiling.md

"% of the matmul rate" (``benchmarks/stdit_vs_3d.py``) compares a forward's FLOP rate with
square 2048^2 / 4096^2 matmuls. A forward's matmuls are not square: at the 64 preset with
(1, 16) patches a Linear multiplies 192 rows by 384 columns, and such a matmul runs below
the square rate by itself. This benchmark separates the two. For one model (``canvas`` =
``STDiT``, ``packed`` = ``PackedSTDiT``, the base width of ``stdit_vs_3d.py``, batch 2):

1. every Linear of one forward (``aten.linear``, ``aten.mm``, ``aten.addmm``) is recorded
   (rows ``M``, in ``K``, out ``N``);
2. each distinct shape is timed alone (``torch.addmm`` on random data, median of ``--repeats``
   after a warm-up), and the sum over the forward's calls is the **Linears' time**: what the
   forward would take if nothing but its matmuls ran;
3. the forward itself is timed eager and compiled (inductor), in the same process, interleaved;
   with ``--freezing`` also compiled with inductor's ``freezing`` (weights folded into the graph
   as constants, CPU Linears on prepacked oneDNN weights), timed after the others (dynamo's
   cache is cleared first: a second compile of the same forward would reuse the first graph)
   and interleaved with eager again.

Reported: the Linears' own rate at the model's shapes (% of the square matmul rate, measured in
the same process at the start and the end), the forward's FLOP rate eager and compiled (the
formula FLOPs of ``stdit_vs_3d.py``), and the share of the compiled forward that is its
Linears' time: what is left for attention, norms, activations and the layout.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stdit_vs_3d as s3d  # noqa: E402  (geometry, models, FLOP formulas)
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


class _MatmulShapes(TorchDispatchMode):
    """Records ``(M, K, N) -> calls`` of every Linear (``aten.linear``, or the ``aten.mm`` /
    ``aten.addmm`` it becomes outside inference mode)."""

    def __init__(self):
        super().__init__()
        self.shapes: dict[tuple[int, int, int], int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        key = None
        if func is torch.ops.aten.linear.default:
            x, weight = args[:2]
            key = (x.numel() // x.shape[-1], weight.shape[1], weight.shape[0])
        elif func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            a, b = args[-2:]
            key = (a.shape[0], a.shape[1], b.shape[1])
        if key is not None:
            self.shapes[key] = self.shapes.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def matmul_shapes(model: torch.nn.Module, inputs) -> dict[tuple[int, int, int], int]:
    """``(M, K, N) -> calls`` of the matrix products of one forward."""
    with torch.inference_mode(), _MatmulShapes() as recorder:
        model(*inputs)
    return recorder.shapes


def matmul_seconds(m: int, k: int, n: int, repeats: int) -> float:
    """One ``M x K @ K x N`` product with a bias (as a Linear runs it), alone: median seconds."""
    x, w, b = torch.randn(m, k), torch.randn(k, n), torch.randn(n)
    torch.addmm(b, x, w)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.addmm(b, x, w)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def square_rate(size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(5))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(preset: str, patch: str, layout: str, args) -> dict:
    width = s3d.WIDTHS["base"]
    geo = s3d.preset_geometry(preset, s3d.PATCHES[patch])
    model, inputs, pairs = s3d.build(layout, geo, width, width["depth"], args.batch)
    shapes = matmul_shapes(model, inputs)
    linear_s = sum(calls * matmul_seconds(*shape, args.repeats * 3) for shape, calls in shapes.items())
    linear_flops = sum(calls * 2 * m * k * n for (m, k, n), calls in shapes.items())
    compiled = torch.compile(model)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    with torch.inference_mode():
        compiled(*inputs)  # compiles
        model(*inputs)
        for _ in range(args.repeats):
            times["eager"].append(_timed(lambda: model(*inputs)))
            times["compiled"].append(_timed(lambda: compiled(*inputs)))
    if args.freezing:
        torch._dynamo.reset()
        frozen = torch.compile(model)
        times["frozen"] = []
        with torch.inference_mode(), torch._inductor.config.patch(freezing=True):
            frozen(*inputs)  # compiles with the weights as constants
        with torch.inference_mode():
            for _ in range(args.repeats):
                times["eager"].append(_timed(lambda: model(*inputs)))
                times["frozen"].append(_timed(lambda: frozen(*inputs)))
        torch._dynamo.reset()
    forward_flops = args.batch * s3d.flops(layout, geo, width, pairs=pairs)
    eager, comp = (statistics.median(times[k]) for k in ("eager", "compiled"))
    frozen_s = statistics.median(times["frozen"]) if args.freezing else None
    return {"preset": preset, "patch": patch, "layout": layout, "rows": sorted({m for m, _, _ in shapes}),
            "linear_s": linear_s, "linear_gflops": linear_flops / linear_s / 1e9,
            "linear_share_of_flops": linear_flops / forward_flops,
            "eager_s": eager, "compiled_s": comp, "eager_gflops": forward_flops / eager / 1e9,
            "compiled_gflops": forward_flops / comp / 1e9, "frozen_s": frozen_s,
            "frozen_gflops": forward_flops / frozen_s / 1e9 if frozen_s else None}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["64"], choices=list(s3d.PRESETS))
    p.add_argument("--patches", nargs="+", default=["2", "1x16"], choices=list(s3d.PATCHES))
    p.add_argument("--layouts", nargs="+", default=["canvas", "packed"], choices=["canvas", "packed"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--freezing", action="store_true", help="also time the forward compiled with inductor's freezing")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rate_start = max(square_rate(2048), square_rate(4096))
    rows = [measure(preset, patch, layout, args)
            for preset in args.presets for patch in args.patches for layout in args.layouts]
    rate = max(rate_start, square_rate(2048), square_rate(4096))

    def pct(gflops: float) -> str:
        return f"{gflops:.1f} ({100 * gflops / rate:.0f} %)"

    lines = [f"square fp32 matmul rate {rate:.1f} GFLOP/s (start {rate_start:.1f}), {args.threads} thread(s), "
             f"batch {args.batch}, base width, median of {args.repeats}", "",
             "| preset | patch | layout | Linear rows M | Linears alone GFLOP/s (% square) | eager GFLOP/s (%) "
             "| compiled GFLOP/s (%) |" + (" frozen GFLOP/s (%) |" if args.freezing else "")
             + " ms eager / compiled" + (" / frozen" if args.freezing else "")
             + " / Linears alone | Linears' share of FLOPs / of compiled time |",
             "|---|---|---|---|---:|---:|---:|" + ("---:|" if args.freezing else "") + "---:|---:|"]
    for r in rows:
        frozen = f" {pct(r['frozen_gflops'])} |" if args.freezing else ""
        frozen_ms = f" / {1e3 * r['frozen_s']:.0f}" if args.freezing else ""
        lines.append(f"| {r['preset']} | {r['patch']} | {r['layout']} | {', '.join(map(str, r['rows']))} | "
                     f"{pct(r['linear_gflops'])} | {pct(r['eager_gflops'])} | {pct(r['compiled_gflops'])} |{frozen} "
                     f"{1e3 * r['eager_s']:.0f} / {1e3 * r['compiled_s']:.0f}{frozen_ms} / {1e3 * r['linear_s']:.0f} | "
                     f"{100 * r['linear_share_of_flops']:.0f} % / {100 * r['linear_s'] / r['compiled_s']:.0f} % |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
