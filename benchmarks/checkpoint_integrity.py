"""What a self-checking checkpoint costs: save and load with the SHA-256 record vs without.

    PYTHONPATH=. .venv/bin/python benchmarks/checkpoint_integrity.py --mb 50 200 --repeats 3

For each size, a state of one float32 tensor is written and read back the way the trainers
did before checkpoints carried records (the non-finite check, ``torch.save`` into a temporary
file + fsync + rename, ``torch.load(weights_only=True)``) and the trainers' way now
(:class:`recipes.common.checkpoint.CheckpointManager`: the same write plus the file's SHA-256
into ``step_XXXXXXXX.pt.sha256``; loading checks it first). Both run side by side in one
process on the same folder; times are medians of ``--repeats``, after one warm-up.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from avblocks.atomic import atomic_path
from recipes.common.checkpoint import CheckpointManager, load_checked
from recipes.common.faults import find_non_finite


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(mb: int, repeats: int) -> tuple[float, float, float, float]:
    """Median seconds of plain save, checked save, plain load, checked load of ``mb`` MB."""
    state = {"model": {"w": torch.randn(mb * 2**20 // 4)}, "step": 1}
    with tempfile.TemporaryDirectory() as folder:
        plain, manager = Path(folder) / "plain.pt", CheckpointManager(Path(folder) / "checked", keep=1)

        def save_plain():  # the trainers' save before the records: finiteness check, atomic write
            find_non_finite(state["model"], "model")
            with atomic_path(plain) as tmp:
                torch.save(state, tmp)

        return (timed(save_plain, repeats), timed(lambda: manager.save(1, state), repeats),
                timed(lambda: torch.load(plain, weights_only=True), repeats),
                timed(lambda: load_checked(manager.checkpoints()[-1]), repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| MB | plain save s | checked save s | ratio | plain load s | checked load s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for mb in args.mb:
        save_p, save_c, load_p, load_c = measure(mb, args.repeats)
        print(f"| {mb} | {save_p:.2f} | {save_c:.2f} | {save_c / save_p:.2f} | {load_p:.2f} | {load_c:.2f} | "
              f"{load_c / load_p:.2f} |")

if __name__ == "__main__":
    main()
