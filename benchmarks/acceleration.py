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
  high-water mark via ``/proc/self/clear_refs``, as ``benchmarks/stdit_vs_3d.py``);
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
``teacache@T`` (:class:`avblocks.dit.cache.TeaCache`, no rescale polynomial); ``sta``
(:class:`avblocks.attention.sparse_video.SlidingTileAttention` on the spatial attention:
tile 2, window 2 tiles per side, dense for the first 2 calls and the first block);
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
import json
import os
import re
import statistics
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


class Setting:
    """One acceleration setting applied to its own copy of the denoiser."""

    def __init__(self, name: str, base: STDiT):
        self.name = name
        import copy

        self.model = copy.deepcopy(base).eval()
        self.parts = name.split("+")
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
                elif part == "sta":
                    self.sparse = stack.enter_context(
                        SlidingTileAttention(self.model, tile=2, window=2, dense_layers=1,
                                             dense_steps=2))
                elif part == "bf16":
                    stack.enter_context(bf16_autocast("cpu"))
                elif part not in ("baseline", "compile") and not part.startswith("steps@"):
                    raise ValueError(f"unknown setting part {part!r}")
            yield self


def _reexec_with_malloc_threshold() -> None:
    """Freed buffers must go back to the OS for the peak-memory probe to see each run's
    own peak: glibc's ``MALLOC_MMAP_THRESHOLD_`` is read at process start, so re-exec."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> None:
    _reexec_with_malloc_threshold()
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    run = args.run or next(
        (Path(d) for d in ("outputs/demo", "outputs/accel") if (Path(d) / "pipeline" / "pipeline.json").is_file()),
        None,
    )
    if run is None:
        raise SystemExit("no trained run found: pass --run (a demo folder holding pipeline/)")
    codec, base = load(run)
    labels = torch.arange(base.y_embedder.num_classes).repeat_interleave(args.per_class)

    def generate(model: STDiT, steps: int) -> torch.Tensor:
        return ProAVDiTPipeline(codec, model).sample_latents(
            labels, steps=steps, sampler=args.sampler, cfg_scale=args.cfg_scale, seed=args.seed, progress=False)
    settings = [Setting(name, base) for name in args.settings]
    if settings[0].name != "baseline":
        raise SystemExit("the first setting must be 'baseline' (the reference)")

    def sample(setting: Setting) -> torch.Tensor:
        return generate(setting.model, setting.steps or args.steps)

    outputs = {}
    for s in settings:  # warm-up (compiles the compiled settings); deterministic: its output
        t0 = time.perf_counter()  # is the setting's output for the quality columns
        with s.applied():
            outputs[s.name] = sample(s)
            s.skipped = f"{s.cache.stats.skipped}/{s.cache.stats.calls}" if s.cache else "-"
        s.compile_s = time.perf_counter() - t0 if s.compiled else None
    converged = None
    if args.reference_steps:
        converged = codec.decode(generate(base, args.reference_steps))[0]
    times = {s.name: [] for s in settings}
    load_start = os.getloadavg()
    for _ in range(args.repeats):
        for s in settings:
            with torch.no_grad(), s.applied():
                t0 = time.perf_counter()
                sample(s)
                times[s.name].append(time.perf_counter() - t0)
    load_end = os.getloadavg()
    rows = []
    c = codec.spec
    reference = None
    for s in settings:
        mem: dict = {}
        with s.applied(), peak_memory(mem):
            sample(s)
        latent = outputs[s.name]
        video, waveform = codec.decode(latent)
        _, audio = codec.decode_frames(latent)
        sync = sync_scores(video, waveform, c.sample_rate, c.fps)["score"]
        if reference is None:
            reference = (video, audio)
        rows.append({
            "setting": s.name, "ms": 1e3 * statistics.median(times[s.name]),
            "peak_mb": mem["peak_bytes"] / 2**20,
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
    head = (
        f"run `{run}`, {len(labels)} clips, {args.sampler} {args.steps} steps, CFG {args.cfg_scale}, "
        f"{args.threads} thread(s), median of {args.repeats} interleaved runs; load average "
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
        text += "\n" + decode_section(codec, args)
    if args.out:
        args.out.write_text(text)


def decode_section(codec, args) -> str:
    """Whole vs chunked decode of a long random latent of the autoencoder's plane shapes."""
    ae = codec.autoencoder
    shapes = [tuple(p) for p in codec.plane_shapes]  # (h, w), (t, h), (t, w) per modality
    t = args.decode_frames
    g = torch.Generator().manual_seed(0)
    planes = []
    for i, (a, b) in enumerate(shapes):
        size = (a, b) if i % 3 == 0 else (t, b)
        planes.append(torch.randn(1, codec.channels, *size, generator=g))
    latent = AVLatent.from_planes(planes)
    rows = []
    for name, fn in (
        ("whole", lambda: ae.decode(latent)),
        (f"chunks of {args.chunk_frames}", lambda: decode_chunked(ae, latent, chunk_frames=args.chunk_frames)),
    ):
        mem: dict = {}
        with torch.no_grad():
            fn()  # warm-up
            t0 = time.perf_counter()
            with peak_memory(mem):
                out = fn()
            elapsed = time.perf_counter() - t0
        rows.append((name, elapsed, mem["peak_bytes"], out))
    diff = max(float((a - b).abs().max()) for a, b in zip(rows[0][3], rows[1][3], strict=True))
    text = (
        f"MDSA decode of a {t}-frame clip (video {rows[0][3][0].shape[-2]}x{rows[0][3][0].shape[-1]}), "
        f"{args.threads} thread(s); max |chunked - whole| = {diff:.1e}\n\n"
        "| decode | ms | peak MB |\n|---|---:|---:|\n"
        + "\n".join(f"| {n} | {1e3 * e:.0f} | {m / 2**20:.0f} |" for n, e, m, _ in rows) + "\n"
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
