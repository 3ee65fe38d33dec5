"""Training-free acceleration of the ProAV-DiT sampler: speed-up, peak memory, quality cost.

For a trained demo model (an autoencoder run and an ST-DiT run, e.g. ``outputs/demo`` from
``python -m recipes.proav_dit.demo``), generates the same clips (same labels, same seed,
same noise) with the saved pipeline's sampler under each acceleration setting,
side by side in one process, and reports per setting:

- ``ms/run`` (median over ``--repeats`` runs; the settings are interleaved repeat by repeat
  so that a change in the machine's load hits all of them alike) and the speed-up against
  the baseline measured in the same run. Sampling only (denoiser calls and solver), not
  decoding. Compiled settings are warmed up first (compile time is reported apart);
- peak memory: extra resident memory during one run (``VmHWM - VmRSS`` after resetting the
  high-water mark via ``/proc/self/clear_refs``, as ``benchmarks/stdit_vs_3d.py``), measured in
  a child process started with ``MALLOC_MMAP_THRESHOLD_=65536``; the timing process runs
  without that allocator setting (it slows some models' runs and not others');
- quality against the baseline output with the same seed: PSNR of the decoded video
  (``[-1, 1]``, peak-to-peak 2, MSE over all clips at once; ``exact`` when identical) and of
  the decoded normalised audio frames, and the AV-sync score of the decoded clips
  (``recipes.common.evaluation.sync_scores``: fraction of audio onsets with a visual bounce
  within one frame; the baseline's own score is the reference, not 1.0);
- 8-bit values changed: the share of video values that differ from the baseline once both
  are quantised to 8 bits as the mp4 writer does (0 = the written file's pixels are the
  same); for scale, 8-bit rounding noise alone is a PSNR of about 59 dB on ``[-1, 1]``;
- ``steps@N``: the uncached sampler with N steps instead of ``--steps``: the naive way to
  be N/steps times faster, the bar a cache has to beat at equal speed;
- optional (``--reference-steps``), PSNR loss: the issue's goal is "under 1 dB PSNR loss against the uncached output"; a
  PSNR *against* the uncached output has no loss to speak of (the baseline's own is
  infinite), so the loss is measured against a converged reference instead: the uncached
  sampler at ``--reference-steps`` steps (e.g. 64) with the same seed and noise. Loss =
  PSNR(baseline video, reference) - PSNR(setting's video, reference), in dB: how much of
  the baseline's fidelity to the converged ODE solution the acceleration gives up (it can
  be negative: an approximation may land nearer by chance);
- the cache's skipped / total denoiser calls (Heun: two calls per step, the last step's
  second call included).

Settings: ``baseline``; ``fbcache@T`` (:class:`avblocks.dit.cache.FirstBlockCache`);
``teacache@T`` (:class:`avblocks.dit.cache.TeaCache`, no rescale polynomial); ``sta``: on a
canvas ST-DiT :class:`avblocks.attention.sparse_video.SlidingTileAttention` on the spatial
attention (tile 2, window 2 tiles per side, dense for the first 2 calls and the first block;
on row tokens the one-column axis is a single tile), on a packed ST-DiT the same weights with
local time attention (``time_window=2`` token rows: each query sees three tiles of two rows);
``compile`` (:func:`avblocks.dit.compile.compile_blocks`, inductor); ``bf16``
(:func:`avblocks.dit.compile.bf16_autocast`); and combinations joined by ``+``.

Then a decode section: MDSA decoding of a long clip (``--decode-frames`` latent frames,
random latents of the trained autoencoder's shapes) whole vs in time chunks
(:func:`avblocks.latent.chunked.decode_chunked`): time, peak memory, max difference.

Threads: ``--threads`` (default 1: the machine is shared; see benchmarks/stdit_vs_3d.py).

Usage:
  python benchmarks/acceleration.py --run outputs/demo              # default settings
  python benchmarks/acceleration.py --run outputs/demo --settings baseline fbcache@0.1
"""

import argparse
import contextlib
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AVBLOCKS_TYPECHECK", "0")

import torch  # noqa: E402

from avblocks.attention.sparse_video import SlidingTileAttention  # noqa: E402
from avblocks.dit.cache import FirstBlockCache, TeaCache  # noqa: E402
from avblocks.dit.compile import bf16_autocast, compile_blocks  # noqa: E402
from avblocks.dit.packed_stdit import PackedSTDiT  # noqa: E402
from avblocks.dit.stdit import STDiT  # noqa: E402
from avblocks.latent.chunked import decode_chunked  # noqa: E402
from avblocks.latent.mdsa import AVLatent  # noqa: E402
from avblocks.pipelines import ProAVDiTPipeline  # noqa: E402
from recipes.common.evaluation import sync_scores  # noqa: E402

DEFAULT_SETTINGS = [
    "baseline", "fbcache@0.05", "fbcache@0.1", "fbcache@0.2", "teacache@0.1", "teacache@0.2",
    "teacache@0.4", "sta", "bf16", "compile", "compile+fbcache@0.1", "compile+teacache@0.2",
    "compile+teacache@0.4", "sta+teacache@0.2",
]


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


@contextlib.contextmanager
def peak_memory(result: dict):
    """Extra resident bytes during the block (VmHWM reset just before)."""
    before = _status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")
    yield
    result["peak_bytes"] = max(_status()["VmHWM"] - before, 0)


def _psnr(a: torch.Tensor, b: torch.Tensor, data_range: float) -> float:
    mse = float((a.double() - b.double()).pow(2).mean())
    return float("inf") if mse == 0 else 10 * float(torch.log10(torch.tensor(data_range**2 / mse)))


def _uint8_changed(a: torch.Tensor, b: torch.Tensor) -> float:
    """Percentage of 8-bit video values (as written to mp4) that differ between a and b."""
    def q(x):
        return ((x.clamp(-1, 1) + 1) * 127.5).round()
    return 100 * float((q(a) != q(b)).double().mean())


def load(run: Path):
    """The run's codec and denoiser: a demo folder's saved pipeline (``run/pipeline``)."""
    pipe = ProAVDiTPipeline.from_pretrained(run / "pipeline")
    return pipe.codec, pipe.denoiser


def local_time(model: PackedSTDiT, window: int) -> PackedSTDiT:
    """The packed model's weights with local time attention of ``window`` token rows."""
    local = PackedSTDiT.from_config(dataclasses.replace(model.config, time_window=window))
    local.load_state_dict(model.state_dict())
    return local.to(next(model.parameters()).device)


class Setting:
    """One acceleration setting applied to its own copy of the denoiser."""

    def __init__(self, name: str, base: STDiT | PackedSTDiT):
        import copy

        self.name = name
        self.parts = name.split("+")
        packed = isinstance(base, PackedSTDiT)
        self.model = (local_time(base, 2) if packed and "sta" in self.parts else copy.deepcopy(base)).eval()
        self.compiled = "compile" in self.parts
        if self.compiled:
            compile_blocks(self.model)
        self.compile_s = None
        self.cache = None
        self.sparse = None
        self.steps = None  # "steps@N": fewer sampler steps, the naive way to be faster
        for part in self.parts:
            if part.startswith("steps@"):
                self.steps = int(part.split("@")[1])

    @contextlib.contextmanager
    def applied(self):
        with contextlib.ExitStack() as stack:
            for part in self.parts:
                if part.startswith("fbcache@"):
                    self.cache = stack.enter_context(
                        FirstBlockCache(self.model, threshold=float(part.split("@")[1])))
                elif part.startswith("teacache@"):
                    self.cache = stack.enter_context(
                        TeaCache(self.model, threshold=float(part.split("@")[1])))
                elif part == "sta" and not isinstance(self.model, PackedSTDiT):
                    self.sparse = stack.enter_context(
                        SlidingTileAttention(self.model, tile=2, window=2, dense_layers=1,
                                             dense_steps=2))
                elif part == "bf16":
                    stack.enter_context(bf16_autocast("cpu"))
                elif part not in ("baseline", "compile", "sta") and not part.startswith("steps@"):
                    raise ValueError(f"unknown setting part {part!r}")
            yield self


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, default=None,
                   help="folder with autoencoder/ and dit/ (default: outputs/demo, else outputs/accel)")
    p.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS)
    p.add_argument("--steps", type=int, default=16, help="sampler steps (the demo's 16)")
    p.add_argument("--sampler", choices=("heun", "euler"), default="heun")
    p.add_argument("--per-class", type=int, default=2)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-steps", type=int, default=0,
                   help="steps of the converged reference for the PSNR-loss column (0: skip)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decode-frames", type=int, default=64,
                   help="latent frames of the long clip of the decode section (0: skip)")
    p.add_argument("--chunk-frames", type=int, default=8)
    p.add_argument("--out", type=Path, help="also write the markdown tables here")
    p.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


class Bench:
    """The run's codec and denoiser, the labels, and one :class:`Setting` per name."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run = args.run or next(
            (Path(d) for d in ("outputs/demo", "outputs/accel") if (Path(d) / "pipeline" / "pipeline.json").is_file()),
            None,
        )
        if self.run is None:
            raise SystemExit("no trained run found: pass --run (a demo folder holding pipeline/)")
        self.codec, self.base = load(self.run)
        self.labels = torch.arange(self.base.y_embedder.num_classes).repeat_interleave(args.per_class)
        self.settings = [Setting(name, self.base) for name in args.settings]
        if self.settings[0].name != "baseline":
            raise SystemExit("the first setting must be 'baseline' (the reference)")

    def generate(self, model: STDiT | PackedSTDiT, steps: int) -> torch.Tensor:
        a = self.args
        return ProAVDiTPipeline(self.codec, model).sample_latents(
            self.labels, steps=steps, sampler=a.sampler, cfg_scale=a.cfg_scale, seed=a.seed, progress=False)

    def sample(self, setting: Setting) -> torch.Tensor:
        return self.generate(setting.model, setting.steps or self.args.steps)


def memory_probe(args: argparse.Namespace) -> None:
    """Child process (started with ``MALLOC_MMAP_THRESHOLD_=65536``, so freed buffers go back
    to the OS and each run starts from the same baseline): the peak of one run per setting
    after its warm-up, and of each decode; printed as JSON."""
    bench = Bench(args)
    peaks: dict = {"settings": {}, "decode": {}}
    for s in bench.settings:
        mem: dict = {}
        with torch.no_grad(), s.applied():
            bench.sample(s)  # warm-up (compiles)
        with torch.no_grad(), s.applied(), peak_memory(mem):
            bench.sample(s)
        peaks["settings"][s.name] = mem["peak_bytes"]
    if args.decode_frames:
        for name, fn in decodes(bench.codec, args):
            mem = {}
            with torch.no_grad():
                fn()
                with peak_memory(mem):
                    fn()
            peaks["decode"][name] = mem["peak_bytes"]
    print(json.dumps(peaks))


def run_memory_probe(argv: list[str], script: str = __file__) -> dict:
    """The peaks of ``script``'s memory probe (``--memory-probe``: :func:`memory_probe` here), measured
    in a child process apart from the timing."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, script, *argv, "--memory-probe"], capture_output=True, text=True,
                          env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"memory probe failed: {proc.stderr.strip()[-400:]}")
    return json.loads(lines[-1])


def require_timing_allocator() -> None:
    """Timing runs without the memory probe's allocator setting (it slows some models, not others)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        raise SystemExit("unset MALLOC_MMAP_THRESHOLD_: timing runs without it (the memory probe sets it)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args)
        return
    require_timing_allocator()
    bench = Bench(args)
    settings, codec, run = bench.settings, bench.codec, bench.run

    outputs = {}
    for s in settings:  # warm-up (compiles the compiled settings); deterministic: its output
        t0 = time.perf_counter()  # is the setting's output for the quality columns
        with s.applied():
            outputs[s.name] = bench.sample(s)
            s.skipped = f"{s.cache.stats.skipped}/{s.cache.stats.calls}" if s.cache else "-"
        s.compile_s = time.perf_counter() - t0 if s.compiled else None
    converged = None
    if args.reference_steps:
        converged = codec.decode(bench.generate(bench.base, args.reference_steps))[0]
    times = {s.name: [] for s in settings}
    load_start = os.getloadavg()
    for _ in range(args.repeats):
        for s in settings:
            with torch.no_grad(), s.applied():
                t0 = time.perf_counter()
                bench.sample(s)
                times[s.name].append(time.perf_counter() - t0)
    load_end = os.getloadavg()
    peaks = run_memory_probe(argv)
    rows = []
    c = codec.spec
    reference = None
    for s in settings:
        latent = outputs[s.name]
        video, waveform = codec.decode(latent)
        _, audio = codec.decode_frames(latent)
        sync = sync_scores(video, waveform, c.sample_rate, c.fps)["score"]
        if reference is None:
            reference = (video, audio)
        rows.append({
            "setting": s.name, "ms": 1e3 * statistics.median(times[s.name]),
            "peak_mb": peaks["settings"][s.name] / 2**20,
            "psnr_video": _psnr(video, reference[0], 2.0),
            "psnr_audio": _psnr(audio, reference[1], float(reference[1].max() - reference[1].min())),
            "sync": sync,
            "psnr_converged": None if converged is None else _psnr(video, converged, 2.0),
            "uint8_changed": _uint8_changed(video, reference[0]),
            "skipped": s.skipped,
            "compile_s": s.compile_s,
        })
        print(json.dumps(rows[-1]), flush=True)
    base_ms = rows[0]["ms"]
    layout = f"{codec.layout_name} layout, {type(bench.base).__name__}"
    head = (
        f"run `{run}` ({layout}), {len(bench.labels)} clips, {args.sampler} {args.steps} steps, CFG "
        f"{args.cfg_scale}, {args.threads} thread(s), median of {args.repeats} interleaved runs (peak memory in a "
        f"separate process); load average "
        f"{'/'.join(f'{v:.1f}' for v in load_start)} -> {'/'.join(f'{v:.1f}' for v in load_end)}\n\n"
        "| setting | ms / run | speed-up | peak MB | PSNR video dB | PSNR audio dB | "
        "8-bit video values changed % | "
        + (f"PSNR loss dB (vs {args.reference_steps} steps) | " if args.reference_steps else "")
        + "AV-sync | calls skipped | compile s |\n"
        + "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.reference_steps else "")
        + "---:|---:|---:|\n"
    )
    ref_psnr = rows[0]["psnr_converged"]

    def loss(r: dict) -> str:
        if ref_psnr is None:
            return "-"
        return f"{ref_psnr - r['psnr_converged']:.2f}"

    def fmt(v: float) -> str:
        return "exact" if v == float("inf") else f"{v:.1f}"

    def line(r: dict) -> str:
        return (
            f"| {r['setting']} | {r['ms']:.0f} | {base_ms / r['ms']:.2f} | {r['peak_mb']:.0f} "
            f"| {fmt(r['psnr_video'])} | {fmt(r['psnr_audio'])} | {r['uint8_changed']:.2f} "
            + (f"| {loss(r)} " if args.reference_steps else "")
            + f"| {r['sync']:.2f} | {r['skipped']} "
            f"| {'-' if r['compile_s'] is None else round(r['compile_s'])} |"
        )

    table = head + "\n".join(line(r) for r in rows) + "\n"
    print(table)
    text = table
    if args.decode_frames:
        text += "\n" + decode_section(codec, args, peaks["decode"])
    if args.out:
        args.out.write_text(text)


def decodes(codec, args) -> list[tuple[str, object]]:
    """Whole and chunked decode of a long random latent of the autoencoder's plane shapes."""
    ae = codec.autoencoder
    shapes = [tuple(p) for p in codec.plane_shapes]  # (h, w), (t, h), (t, w) per modality
    t = args.decode_frames
    g = torch.Generator().manual_seed(0)
    planes = []
    for i, (a, b) in enumerate(shapes):
        size = (a, b) if i % 3 == 0 else (t, b)
        planes.append(torch.randn(1, codec.channels, *size, generator=g))
    latent = AVLatent.from_planes(planes)
    return [("whole", lambda: ae.decode(latent)),
            (f"chunks of {args.chunk_frames}", lambda: decode_chunked(ae, latent, chunk_frames=args.chunk_frames))]


def decode_section(codec, args, peaks: dict) -> str:
    """Whole vs chunked decode: time here, peak memory from the probe."""
    rows = []
    for name, fn in decodes(codec, args):
        with torch.no_grad():
            fn()  # warm-up
            t0 = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - t0
        rows.append((name, elapsed, peaks[name], out))
    diff = max(float((a - b).abs().max()) for a, b in zip(rows[0][3], rows[1][3], strict=True))
    text = (
        f"MDSA decode of a {args.decode_frames}-frame clip (video {rows[0][3][0].shape[-2]}x"
        f"{rows[0][3][0].shape[-1]}), {args.threads} thread(s); max |chunked - whole| = {diff:.1e}\n\n"
        "| decode | ms | peak MB |\n|---|---:|---:|\n"
        + "\n".join(f"| {n} | {1e3 * e:.0f} | {m / 2**20:.0f} |" for n, e, m, _ in rows) + "\n"
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
