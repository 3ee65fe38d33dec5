"""What the step loader costs per step against the direct indexing it replaced (one process).

    python benchmarks/loader_overhead.py            # the demo denoiser's batches: 32 latents of 4 x 6 x 16 x 16

The ProAV-DiT denoiser used to index an in-memory latent tensor with each step's indices; it
now reads them through :func:`recipes.common.loading.step_loader` over the memory-mapped,
sharded cache (:mod:`recipes.common.latent_cache`), so that workers can make the batches and
a cache larger than RAM trains. With ``num_workers=0`` (the demo, the tests) the difference is
paid in the training process: this measures it, side by side, 5 interleaved rounds of 120
steps, median milliseconds per step, one thread.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from avblocks.device import HOST, to_device  # noqa: E402
from recipes.common.latent_cache import RowsDataset, open_shards, write_shards  # noqa: E402
from recipes.common.loading import step_loader  # noqa: E402
from recipes.common.schedule import StepBatchSampler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    torch.set_num_threads(1)
    latents, labels = torch.randn(args.clips, 4, 6, 16, 16), torch.randint(0, 4, (args.clips,))
    folder = tempfile.mkdtemp()
    cache = open_shards(write_shards(Path(folder) / "cache", [{"latents": latents, "labels": labels}]))

    def indexed():  # what train_dit did
        for index in StepBatchSampler(num_items=args.clips, batch_size=args.batch, total_steps=args.steps, seed=0):
            latents[index], labels[index]

    def loaded():  # what it does now (num_workers=0), with the move to the run's device
        for batch in step_loader(RowsDataset(cache), batch_size=args.batch, total_steps=args.steps, start_step=0,
                                 seed=0):
            to_device(batch, HOST)

    times = {"indexed in memory": [], "step loader, memory-mapped shards": []}
    for _ in range(5):
        for (name, run) in zip(times, (indexed, loaded), strict=True):
            began = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - began) / args.steps * 1e3)
    for name, values in times.items():
        print(f"{name}: {sorted(values)[2]:.2f} ms / step (rounds: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
