"""The per-stream step cache on a trained dual-stream DiT: speed-up and quality against uncached.

    PYTHONPATH=. python benchmarks/stream_cache.py --run outputs/couplings/dual_cross \
        --settings baseline steps@8 stream@0.1,0.1,0 stream@0.2,0.2,0 stream@0.2,0.2,0.1 --modes joint a2v

For a trained run of ``recipes.dual_stream.train`` (its ``pipeline/``), samples the same held-out
clips (their labels; in ``a2v`` their audio held clean; same seed and noise) under each setting,
side by side in one process, the settings interleaved repeat by repeat, and reports per mode and
setting (the columns of ``benchmarks/acceleration.py``, whose helpers it uses):

- ms per run (median of ``--repeats``; sampling only) and the speed-up against ``baseline``;
- peak memory: extra resident memory during one run, probed in a child process started with
  ``MALLOC_MMAP_THRESHOLD_=65536`` (the timing runs without that allocator setting);
- PSNR of the generated video (``[-1, 1]``) and of the generated normalised audio frames
  against the uncached output with the same seed ("exact" when identical);
- synchrony on the files a user gets: the decoded clips written as mp4 and read back (in a2v
  with the given audio, in v2a with the given video), scored as the couplings comparison
  scores them (:func:`recipes.common.sync_eval.set_metrics`): exact-frame event F1 and
  AV-Align, next to the baseline's own;
- what the cache skipped: stream blocks skipped / calls, per stream, and couplings reused /
  coupling calls.

Settings: ``baseline``; ``steps@N`` (the uncached sampler with N steps: the naive speed-up a
cache must beat); ``stream@V,A,C``: :class:`avblocks.dit.stream_cache.StreamCache` with video,
audio and coupling thresholds ``V``, ``A``, ``C``.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acceleration as accel  # noqa: E402  (peak memory probe, PSNR, 8-bit change; sets up sys.path)
import torch  # noqa: E402

from avblocks.pipelines import DualStreamPipeline, SoundingVideo  # noqa: E402
from recipes.common import load_config  # noqa: E402
from recipes.common.data import ClipData  # noqa: E402
from recipes.common.sync_eval import read_back, set_metrics  # noqa: E402
from recipes.dual_stream.config import DualStreamRecipe  # noqa: E402


def parse(setting: str) -> dict:
    if setting == "baseline":
        return {}
    if setting.startswith("steps@"):
        return {"steps": int(setting.split("@")[1])}
    if setting.startswith("stream@"):
        v, a, c = (float(x) for x in setting.split("@")[1].split(","))
        return {"step_cache": {"video_threshold": v, "audio_threshold": a, "coupling_threshold": c}}
    raise ValueError(f"unknown setting {setting!r}: baseline, steps@N or stream@V,A,C")


def sync_from_mp4(video: torch.Tensor, audio: torch.Tensor, spec) -> dict:
    """Exact-frame event F1 and AV-Align of clips written as mp4 and read back."""
    with tempfile.TemporaryDirectory() as folder:
        written = SoundingVideo(video, audio, spec).save(Path(folder) / "clip.mp4")
        metrics = set_metrics(*read_back(written if isinstance(written, list) else [written], spec), spec)
    return {"event_f1": metrics["event_f1_exact"], "av_align": metrics["av_align"]["mean"]}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished dual-stream run (config.yaml, pipeline/)")
    p.add_argument("--settings", nargs="+", default=["baseline", "steps@8", "stream@0.1,0.1,0",
                                                      "stream@0.2,0.2,0", "stream@0.2,0.2,0.1"])
    p.add_argument("--modes", nargs="+", default=["joint", "a2v"], choices=["joint", "a2v", "v2a"])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    p.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.settings[0] != "baseline":
        raise SystemExit("the first setting must be 'baseline' (the reference)")
    return args


class Bench:
    """The run's pipeline and held-out clips, and one sampling call per mode and setting."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pipe = DualStreamPipeline.from_pretrained(args.run / "pipeline")
        data = ClipData(load_config(DualStreamRecipe, args.run / "config.yaml").data)
        self.batch = data.held_out_batch(args.clips)
        self.video, self.audio, self.labels = data.model_inputs(self.batch)
        self.spec = data.spec

    def sample(self, mode: str, setting: str):
        options = parse(setting)
        given = {"a2v": {"audio": self.audio}, "v2a": {"video": self.video}}.get(mode, {})
        out = self.pipe.sample_streams(self.labels, sampler="heun", cfg_scale=1.0, seed=self.args.seed,
                                       progress=False, **({"steps": self.args.steps} | options | given))
        return out, self.pipe.last_cache if "step_cache" in options else None


def memory_probe(args: argparse.Namespace) -> None:
    """Child process (``MALLOC_MMAP_THRESHOLD_=65536``, so freed buffers go back to the OS): the
    peak of one run per mode and setting after a warm-up run; printed as JSON."""
    bench, peaks = Bench(args), {}
    for mode in args.modes:
        for s in args.settings:
            bench.sample(mode, s)
            mem: dict = {}
            with accel.peak_memory(mem):
                bench.sample(mode, s)
            peaks[f"{mode} {s}"] = mem["peak_bytes"]
    print(json.dumps(peaks))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args)
        return
    accel.require_timing_allocator()
    bench = Bench(args)
    load_start, rows = tuple(round(v, 1) for v in os.getloadavg()), []
    for mode in args.modes:
        outputs, caches = {}, {}
        for s in args.settings:  # the output each setting gives, and what its cache did
            outputs[s], caches[s] = bench.sample(mode, s)
        times = {s: [] for s in args.settings}
        for _ in range(args.repeats):
            for s in args.settings:
                t0 = time.perf_counter()
                bench.sample(mode, s)
                times[s].append(time.perf_counter() - t0)
        ref_video, ref_audio = outputs["baseline"]
        base_ms = 1e3 * statistics.median(times["baseline"])
        for s in args.settings:
            gen_video, gen_audio = outputs[s]
            decoded_video, wave = bench.pipe.codec.decode(gen_video, gen_audio)
            if mode == "a2v":
                wave = bench.batch["audio"]
            if mode == "v2a":
                decoded_video = bench.batch["video"]
            cache = caches[s]
            skipped = "-" if cache is None else (
                f"video {cache.streams['video'].skipped}/{cache.streams['video'].calls}, "
                f"audio {cache.streams['audio'].skipped}/{cache.streams['audio'].calls}, "
                f"couplings {cache.streams['coupling'].skipped}/{cache.streams['coupling'].calls}")
            ms = 1e3 * statistics.median(times[s])
            row = {"mode": mode, "setting": s, "ms": ms, "speed_up": base_ms / ms,
                   "psnr_video": accel._psnr(gen_video, ref_video, 2.0),
                   "psnr_audio": accel._psnr(gen_audio, ref_audio, float(ref_audio.max() - ref_audio.min())),
                   **sync_from_mp4(decoded_video, wave, bench.spec), "skipped": skipped}
            print(json.dumps(row), flush=True)
            rows.append(row)
    load_end = tuple(round(v, 1) for v in os.getloadavg())
    peaks = accel.run_memory_probe(argv, script=__file__)
    lines = [f"| {r['mode']} | {r['setting']} | {r['ms']:.0f} | {r['speed_up']:.2f} | "
             f"{peaks[r['mode'] + ' ' + r['setting']] / 2**20:.0f} | {_db(r['psnr_video'])} | {_db(r['psnr_audio'])} | "
             f"{_score(r['event_f1'])} | {r['av_align']:.2f} | {r['skipped']} |" for r in rows]
    head = (f"run `{args.run}`, {args.clips} clips, Heun {args.steps} steps, no guidance, {args.threads} thread(s), "
            f"median of {args.repeats} interleaved runs; load average {load_start} -> {load_end}\n\n"
            "| mode | setting | ms / run | speed-up | peak MB | PSNR video dB | PSNR audio dB | event F1 exact "
            "| AV-Align | skipped |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
    table = head + "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


def _score(value: float | None) -> str:
    """``-`` where a score is undefined (no onset and no bounce in any clip)."""
    return "-" if value is None or value != value else f"{value:.2f}"


def _db(value: float) -> str:
    return "exact" if value == float("inf") else f"{value:.1f}"


if __name__ == "__main__":
    main()
