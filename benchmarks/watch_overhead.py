"""What watching a run costs: the demo's denoiser stage with and without it, side by side.

Watching (recipes/common/watch.py, docs/training.md) is TensorBoard scalars on every log
line, a validation loss every ``run.eval_every`` steps and sample sets. This trains the
demo's ST-DiT stage (``configs/dit_tiny.yaml`` on a trained autoencoder, e.g. the demo's)
with watching as the config ships it and with all of it off (``run.tensorboard=false
run.eval_every=0 run.samples=0``), alternating, and prints for each run the wall time and the
process CPU time of the whole ``train_dit.train`` call (training, validation, samples,
saving), the median time of one training step, and the seconds spent inside the watching
calls themselves (timed around ``Watch.scalars`` and the validation / sample probes); then the
ratios of the two runs, and the ratio at the demo's full length: the per-call costs times
the number of calls the shipped config makes in 750 steps, over 750 unwatched steps.

    PYTHONPATH=. python benchmarks/watch_overhead.py outputs/demo/autoencoder [--steps 750] [--repeats 1]

The latent cache is built before the first timed run, so no run pays for it. On a shared
machine the wall-time ratio is noisy; the CPU-time ratio and the watching seconds are not.
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from recipes.common import watch
from recipes.common.config import load_config
from recipes.proav_dit import train_dit
from recipes.proav_dit.codec import cached_latents, load_codec
from recipes.proav_dit.config import DiTRecipe

CONFIG = Path(train_dit.__file__).parent / "configs" / "dit_tiny.yaml"
OFF = ["run.tensorboard=false", "run.eval_every=0", "run.samples=0"]
PARTS = ("scalars", "_validate", "_sample")  # the Watch methods timed
SPENT: dict[str, list[float]] = {}
STEPS: list[float] = []  # when each step ended (Watch.after_step is called once per step)


def timing(name: str, method):
    def timed(*args, **kwargs):
        began = time.monotonic()
        try:
            return method(*args, **kwargs)
        finally:
            SPENT[name].append(time.monotonic() - began)
    return timed


def stamped(method):
    def timed(self, done, log):
        STEPS.append(time.monotonic())
        return method(self, done, log)
    return timed


def step_seconds() -> float:
    """The median wall time of one training step, stamp to stamp (the median skips a gap
    that holds a validation or a sample set, and the setup and saving around the steps)."""
    gaps = [b - a for a, b in zip(STEPS, STEPS[1:], strict=False)]
    return statistics.median(gaps)


def timed_run(autoencoder: str, out: Path, steps: int, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(DiTRecipe, CONFIG, [f"autoencoder={autoencoder}", f"run.output_dir={out}",
                                          f"optim.steps={steps}", "run.progress=false", *extra])
    SPENT.update({name: [] for name in PARTS})
    STEPS.clear()
    wall, cpu = time.monotonic(), time.process_time()
    train_dit.train(cfg)
    return {"wall": time.monotonic() - wall, "cpu": time.process_time() - cpu, "step": step_seconds(),
            "calls": {name: list(seconds) for name, seconds in SPENT.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("autoencoder", help="a trained autoencoder run folder (the demo's: outputs/demo/autoencoder)")
    parser.add_argument("--steps", type=int, default=750, help="denoiser steps (the demo's: 750)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    for name in PARTS:
        setattr(watch.Watch, name, timing(name, getattr(watch.Watch, name)))
    watch.Watch.after_step = stamped(watch.Watch.after_step)
    cfg = load_config(DiTRecipe, CONFIG, [f"autoencoder={args.autoencoder}"])
    codec, data = load_codec(args.autoencoder, patch=cfg.model.patch)
    cached_latents(codec, data, args.autoencoder, progress=False)
    runs: dict[str, list[dict]] = {"off": [], "watched": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, extra in (("off", OFF), ("watched", [])):
                runs[name].append(r := timed_run(args.autoencoder, Path(tmp) / name, args.steps, extra))
                calls = ", ".join(f"{part.strip('_')} {len(s)} x {statistics.mean(s):.3f} s"
                                  for part, s in r["calls"].items() if s)
                print(f"repeat {i}: {name:8s} wall {r['wall']:7.1f} s  cpu {r['cpu']:7.1f} s  "
                      f"step {r['step']:.2f} s  ({calls})", flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu")} for name, rs in runs.items()}
    w, o = med["watched"], med["off"]
    print(f"\n{args.steps} steps, median of {args.repeats}: wall ratio {w['wall'] / o['wall']:.3f}, "
          f"cpu ratio {w['cpu'] / o['cpu']:.3f}")
    # the demo's schedule at its full length, from the per-call costs measured above
    calls = {part: [s for r in runs["watched"] for s in r["calls"][part]] for part in PARTS}
    demo = cfg.optim.steps  # the shipped config's length
    log_every, eval_every = cfg.run.log_every, cfg.run.eval_every
    counts = {"scalars": demo // log_every, "_validate": demo // eval_every if eval_every else 0,
              "_sample": 1 if cfg.run.samples else 0}
    extra = sum(counts[p] * statistics.median(calls[p]) for p in PARTS if calls[p])
    base = statistics.median(r["step"] for r in runs["off"]) * demo
    print(f"at the demo's {demo} steps ({counts['scalars']} log lines, {counts['_validate']} validations, "
          f"{counts['_sample']} sample set): watching {extra:.1f} s on {base:.0f} s of training steps = "
          f"ratio {1 + extra / base:.3f} (per-call medians and the unwatched run's median step, as measured above)")


if __name__ == "__main__":
    main()
