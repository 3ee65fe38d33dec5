"""Plot the coupling comparison (``benchmarks/couplings.py``'s results.json) as one PNG.

    python benchmarks/plot_couplings.py outputs/couplings/results.json docs/images/couplings.png

Left: event F1 within one frame per model and mode (joint, audio-to-video, video-to-audio),
with the real clips' and the shuffled real pairs' scores as lines. Right: time and FLOPs of one
training step.
"""

import argparse
import json
from pathlib import Path

MODES = {"joint": "joint", "audio-to-video": "audio_to_video", "video-to-audio": "video_to_audio"}
METRIC = "event_f1_1frame"


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(MODES)
    for k, (label, mode) in enumerate(MODES.items()):
        scores = [results["models"][n]["sets"].get(mode, {}).get(METRIC) for n in names]
        xs = [i + (k - 1) * width for i, s in enumerate(scores) if s is not None]
        left.bar(xs, [s for s in scores if s is not None], width, label=label)
    ref = results["reference"]
    left.axhline(ref["real"][METRIC], color="k", lw=1, label="real clips")
    left.axhline(ref["shuffled"][METRIC], color="k", lw=1, ls="--", label="shuffled real pairs")
    left.set_xticks(range(len(names)), [n.replace("dual-stream, ", "") for n in names], rotation=30, ha="right")
    left.set_ylabel("event F1 (onsets and bounces matched within a frame)")
    left.set_ylim(0, 1.05)
    left.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.32))
    left.set_title(f"{results['steps']} steps x {results['batch']} clips, ~{results['budget'] / 1e6:.2f}M parameters each")
    ms = [1000 * results["models"][n]["cost"]["time_s"] for n in names]
    gflop = [results["models"][n]["cost"]["flops"] / 1e9 for n in names]
    right.bar(range(len(names)), ms, color="tab:gray")
    for i, (m, g) in enumerate(zip(ms, gflop)):
        right.text(i, m, f"{g:.0f}\nGFLOP", ha="center", va="bottom", fontsize=7)
    right.set_xticks(range(len(names)), [n.replace("dual-stream, ", "") for n in names], rotation=30, ha="right")
    right.set_ylabel(f"ms per training step (batch {results['batch']}, 1 thread)")
    right.set_ylim(0, 1.25 * max(ms))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    print(plot(json.loads(args.results.read_text()), args.out))


if __name__ == "__main__":
    main()
