"""Eager cost of the run-time shape checks on a realistic block.

The block is a pre-norm transformer block (attention + MLP) on a `b n d` token sequence,
the shape of the ST-DiT and autoencoder token streams. The same module is timed with its
forward wrapped by `shapecheck` and unwrapped, interleaved in one run, at the sizes of the
tiny demo preset and larger.

    .venv/bin/python benchmarks/typecheck_overhead.py [--repeats 200] [--threads 1]

One thread by default: on a 2-core machine with anything else running, two OpenMP threads
stall at every barrier and swamp a difference of microseconds.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from avblocks.typing import Float, Tensor, shapecheck


class Block(nn.Module):
    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def raw_forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.out(a)
        return x + self.mlp(self.norm2(x))

    checked_forward = shapecheck(raw_forward)


def time_call(fn, x, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    # (batch, tokens, width): tiny demo ST-DiT plane, a 64x64 plane, a 16-frame 16x16 volume
    for b, n, d in [(2, 64, 64), (4, 256, 128), (2, 4096, 256)]:
        block = Block(d).eval()
        x = torch.randn(b, n, d)
        repeats = max(10, args.repeats * 64 // n)
        with torch.no_grad():
            raw, checked = block.raw_forward, block.checked_forward
            for fn in (raw, checked):
                time_call(fn, x, 5)  # warm-up
            t_raw = min(time_call(raw, x, repeats) for _ in range(3))
            t_chk = min(time_call(checked, x, repeats) for _ in range(3))
        rows.append((b, n, d, t_raw * 1e6, t_chk * 1e6, (t_chk - t_raw) * 1e6, t_chk / t_raw))
    print("| b | tokens | width | unchecked (us) | checked (us) | overhead (us) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for b, n, d, raw_us, chk_us, over_us, ratio in rows:
        print(f"| {b} | {n} | {d} | {raw_us:.0f} | {chk_us:.0f} | {over_us:.0f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
