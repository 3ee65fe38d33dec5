"""Screen READ runs side by side, in memory: audio-to-video event F1, integrity and the three losses.

    PYTHONPATH=. python benchmarks/read_screen.py outputs/run_a outputs/run_b [--clips 16]

A quicker look than ``avblocks run read_a2v.evaluate_sync`` (which writes and reads back mp4
files, 32 clips, next to real and shuffled pairs; use it for the numbers that count): each run's
``pipeline/`` makes clip ``i`` of ``clips`` held-out clips from its sound and first frame with
seed ``i``, scored in memory by :func:`recipes.common.sync_eval.set_metrics`; then the
denoiser's loss with the right, no and another clip's audio (``benchmarks/read_audio_use.py``,
8 batches). One markdown row per run.
"""

import argparse
import time

import torch

from benchmarks.read_audio_use import main as audio_use
from recipes.common.data import ClipData
from recipes.common.sync_eval import set_metrics
from recipes.read_a2v.generate import load_run


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--clips", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| run | F1 exact | F1 ±1 | bounces | integrity (empty / several / broken) | AV-Align "
          "| loss: right / no / another's audio | seconds |\n|---|---:|---:|---:|---|---:|---|---:|")
    rows = []
    for run in args.runs:
        began = time.perf_counter()
        cfg, pipe = load_run(run)
        data = ClipData(cfg.data)
        real = data.held_out_batch(args.clips)
        video = torch.cat([pipe(real["audio"][i], real["video"][i, :, 0], frames=cfg.data.num_frames, seed=i).video
                           for i in range(args.clips)])
        m = set_metrics(video, real["audio"], spec=data.spec, labels=torch.as_tensor(real["label"]),
                        num_classes=data.num_classes)
        losses = audio_use([run, "--batches", "8"])
        i = m["integrity"]
        rows.append(f"| {run} | {m['event_f1_exact']:.2f} | {m['event_f1_1frame']:.2f} | {m['bounces']} | "
                    f"{i['score']:.2f} ({i['empty']} / {i['several']} / {i['broken']}) | {m['av_align']['mean']:.2f} | "
                    f"{' / '.join(f'{v:.4f}' for v in losses.values())} | {time.perf_counter() - began:.0f} |")
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
