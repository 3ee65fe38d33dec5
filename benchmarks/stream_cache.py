"""The per-stream step cache on a trained dual-stream DiT: speed-up and quality against uncached.

    PYTHONPATH=. python benchmarks/stream_cache.py --run outputs/couplings/dual_cross \
        --settings baseline steps@8 stream@0.1,0.1,0 stream@0.2,0.2,0 stream@0.2,0.2,0.1 --modes joint a2v

For a trained run of ``recipes.dual_stream.train`` (its ``pipeline/``), samples the same held-out
clips (their labels; in ``a2v`` their audio held clean; same seed and noise) under each setting,
side by side in one process, the settings interleaved repeat by repeat, and reports per mode and
setting (the columns of ``benchmarks/acceleration.py``, whose helpers it uses):

- ms per run (median of ``--repeats``; sampling only) and the speed-up against ``baseline``;
- peak memory: extra resident memory during one run;
- PSNR of the generated video (``[-1, 1]``) and of the generated normalised audio frames
  against the uncached output with the same seed ("exact" when identical);
- AV-sync of the decoded clips (:func:`recipes.common.evaluation.sync_scores`; in a2v with
  the given audio), next to the baseline's own;
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acceleration as accel  # noqa: E402  (peak memory probe, PSNR, 8-bit change; sets up sys.path)
import torch  # noqa: E402

from avblocks.pipelines import DualStreamPipeline  # noqa: E402
from recipes.common import load_config  # noqa: E402
from recipes.common.data import ClipData  # noqa: E402
from recipes.common.evaluation import sync_scores  # noqa: E402
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


def main() -> None:
    accel._reexec_with_malloc_threshold()
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.settings[0] != "baseline":
        raise SystemExit("the first setting must be 'baseline' (the reference)")
    pipe = DualStreamPipeline.from_pretrained(args.run / "pipeline")
    data = ClipData(load_config(DualStreamRecipe, args.run / "config.yaml").data)
    batch = data.held_out_batch(args.clips)
    video, audio, labels = data.model_inputs(batch)
    spec = data.spec

    def sample(mode: str, options: dict):
        given = {"a2v": {"audio": audio}, "v2a": {"video": video}}.get(mode, {})
        out = pipe.sample_streams(labels, sampler="heun", cfg_scale=1.0, seed=args.seed, progress=False,
                                  **({"steps": args.steps} | options | given))
        return out, pipe.last_cache if "step_cache" in options else None

    load_start, lines = tuple(round(v, 1) for v in os.getloadavg()), []
    for mode in args.modes:
        outputs, caches = {}, {}
        for s in args.settings:  # the output each setting gives, and what its cache did
            outputs[s], caches[s] = sample(mode, parse(s))
        times = {s: [] for s in args.settings}
        for _ in range(args.repeats):
            for s in args.settings:
                t0 = time.perf_counter()
                sample(mode, parse(s))
                times[s].append(time.perf_counter() - t0)
        ref_video, ref_audio = outputs["baseline"]
        base_ms = 1e3 * statistics.median(times["baseline"])
        rows = []
        for s in args.settings:
            mem: dict = {}
            with accel.peak_memory(mem):
                sample(mode, parse(s))
            gen_video, gen_audio = outputs[s]
            decoded_video, wave = pipe.codec.decode(gen_video, gen_audio)
            if mode == "a2v":
                wave = batch["audio"]
            if mode == "v2a":
                decoded_video = batch["video"]
            cache = caches[s]
            skipped = "-" if cache is None else (
                f"video {cache.streams['video'].skipped}/{cache.streams['video'].calls}, "
                f"audio {cache.streams['audio'].skipped}/{cache.streams['audio'].calls}, "
                f"couplings {cache.streams['coupling'].skipped}/{cache.streams['coupling'].calls}")
            ms = 1e3 * statistics.median(times[s])
            row = {"mode": mode, "setting": s, "ms": ms, "speed_up": base_ms / ms, "peak_mb": mem["peak_bytes"] / 2**20,
                   "psnr_video": accel._psnr(gen_video, ref_video, 2.0),
                   "psnr_audio": accel._psnr(gen_audio, ref_audio, float(ref_audio.max() - ref_audio.min())),
                   "sync": sync_scores(decoded_video, wave, spec.sample_rate, spec.fps)["score"], "skipped": skipped}
            print(json.dumps(row), flush=True)
            rows.append(row)
        lines += [f"| {r['mode']} | {r['setting']} | {r['ms']:.0f} | {r['speed_up']:.2f} | {r['peak_mb']:.0f} | "
                  f"{_db(r['psnr_video'])} | {_db(r['psnr_audio'])} | {r['sync']:.2f} | {r['skipped']} |" for r in rows]
    head = (f"run `{args.run}`, {args.clips} clips, Heun {args.steps} steps, no guidance, {args.threads} thread(s), "
            f"median of {args.repeats} interleaved runs; load average {load_start} -> "
            f"{tuple(round(v, 1) for v in os.getloadavg())}\n\n"
            "| mode | setting | ms / run | speed-up | peak MB | PSNR video dB | PSNR audio dB | AV-sync | skipped |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---|\n")
    table = head + "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


def _db(value: float) -> str:
    return "exact" if value == float("inf") else f"{value:.1f}"


if __name__ == "__main__":
    main()
