"""Memory and speed of READ-style long generation against the video's length.

Each length runs in a fresh subprocess (so no run inherits another's allocations). The model is the demo preset's denoiser (``recipes/read_a2v/configs/tiny.yaml``:
pixel frames 3 x 32 x 32 in 8 x 8 patches, 8 motion frames + the reference, width 64,
depth 3) with random
weights (memory and speed do not depend on the weights), driven by random audio codes;
frames come from :func:`avblocks.diffusion.long_generation.iter_long_generation` and are streamed
into an mp4 in a temporary folder with :class:`avblocks.data.mp4.Mp4Writer`, as
:meth:`avblocks.pipelines.ReadPipeline.stream` does. Two modes:

- ``stream``: what ``ReadPipeline.stream`` (and ``recipes.read_a2v.generate``) does (frames
  written as they are made);
- ``hold``: the same generation, but every frame is also kept in a list (what a
  generate-then-write pipeline holds), to show what streaming saves.

``--tune zerolatency`` runs libx264 without lookahead (each frame leaves the encoder at once)
instead of the pipeline's default settings.

Reported per length: the highest RSS seen after each clip minus the RSS before generation
(MiB; read from ``/proc/self/statm``; the inputs, codes and soundtrack, exist before), peak
traced Python
allocations (``tracemalloc``, MiB: tensors are not traced, so this is the Python overhead),
and frames per second.

    .venv/bin/python benchmarks/read_long_generation.py [--lengths 16 64 256] [--steps 10] [--threads 1] [--tune zerolatency]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's avblocks first


def child(length: int, steps: int, mode: str, threads: int, tune: str | None) -> dict:
    import resource
    import tempfile
    import time
    import tracemalloc

    import torch

    torch.set_num_threads(threads)
    from avblocks.data.mp4 import Mp4Writer
    from avblocks.diffusion.long_generation import iter_long_generation
    from avblocks.diffusion.schedules import ReadSchedule
    from avblocks.dit.read_denoiser import ReadDenoiser

    torch.manual_seed(0)
    model = ReadDenoiser(frames=9, patch=8, hidden_size=64, depth=3, num_heads=4, audio_dim=32).eval()
    with torch.no_grad():  # non-zero gates so every branch runs as in a trained model
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    schedule = ReadSchedule(frames=9, steps=steps)
    codes = torch.randn(1, length, 32)
    reference = torch.rand(1, 3, 32, 32) * 2 - 1
    warm = list(iter_long_generation(model, codes[:, :9], reference, schedule=schedule, steps=1))
    del warm

    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    audio = torch.zeros(length * 2000)  # the input soundtrack (grows with the length)
    before = rss_mib()
    tracemalloc.start()
    held, highest = [], before
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        with Mp4Writer(Path(tmp) / "long.mp4", fps=8, sample_rate=16000, audio=audio, tune=tune) as writer:
            for new in iter_long_generation(model, codes, reference, schedule=schedule,
                                            steps=steps, seed=0):
                writer.write(new[0])
                if mode == "hold":
                    held.append(new)
                highest = max(highest, rss_mib())
    seconds = time.perf_counter() - began
    _, traced = tracemalloc.get_traced_memory()
    return {"frames": length, "mode": mode, "peak_rss_growth_mib": round(highest - before, 1),
            "peak_traced_python_mib": round(traced / 2**20, 2),
            "frames_per_second": round(length / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["stream", "hold"])
    parser.add_argument("--tune", default=None, help="libx264 tune (default: the pipeline's: none)")
    parser.add_argument("--child", nargs=3, metavar=("LENGTH", "MODE", "STEPS"), default=None)
    args = parser.parse_args()
    if args.child:
        length, mode, steps = args.child
        print(json.dumps(child(int(length), int(steps), mode, args.threads, args.tune)))
        return
    print(f"{'frames':>7} {'mode':>6} {'peak RSS growth MiB':>20} {'traced py MiB':>14} {'fps':>6}")
    for mode in args.modes:
        for length in args.lengths:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(length), mode, str(args.steps),
                 "--threads", str(args.threads), *(["--tune", args.tune] if args.tune else [])],
                capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{row['frames']:>7} {row['mode']:>6} {row['peak_rss_growth_mib']:>20} "
                  f"{row['peak_traced_python_mib']:>14} {row['frames_per_second']:>6}", flush=True)


if __name__ == "__main__":
    main()
