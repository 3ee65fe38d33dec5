"""Plot the coupling comparison (``benchmarks/couplings.py``'s results.json) as one PNG.

    python benchmarks/plot_couplings.py outputs/couplings/results.json docs/images/couplings.png

:func:`from_markdown` reads the same numbers back from the table ``couplings.py`` prints (how
``docs/couplings.md`` draws its picture from its own table).

Left: exact-frame event F1 and middle: event F1 within one frame, per model and mode (joint,
audio-to-video, video-to-audio), with the real clips' and the shuffled real pairs' scores as lines. Right: time
and FLOPs of one training step.
"""

import argparse
import json
from pathlib import Path

MODES = {"joint": "joint", "audio-to-video": "audio_to_video", "video-to-audio": "video_to_audio"}
METRICS = {  # panel title -> the score in a set's metrics
    "event F1, exact frame\n(sound onsets and bounces in the same frame)": lambda m: m["event_f1_exact"],
    "event F1 within one frame\n(the same, a frame either way)": lambda m: m["event_f1_1frame"],
}


def _per_mode(cell: str) -> list[float | None]:
    """``"0.5 / - / 0.25"`` -> one value per mode (``-``: none); a single value holds for all three."""
    values = [None if v.strip() == "-" else float(v) for v in cell.split("/")]
    return values * 3 if len(values) == 1 else values


def from_markdown(text: str, **run) -> dict:
    """The parts of a results.json that :func:`plot` draws, read from the table of
    ``couplings.py`` in ``text`` (``run``: steps, batch, budget and clips, as in results.json)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model | parameters |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    models, reference = {}, {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        exact, near = _per_mode(cells["event F1 exact"]), _per_mode(cells["event F1 +-1 frame"])
        sets = {mode: {"event_f1_exact": e, "event_f1_1frame": n}
                for mode, e, n in zip(MODES.values(), exact, near) if e is not None or n is not None}
        if cells["ms / step"] == "-":
            reference["real" if cells["model"].startswith("real") else "shuffled"] = sets["joint"]
        else:
            models[cells["model"]] = {"sets": sets, "cost": {"time_s": float(cells["ms / step"]) / 1000,
                                                             "flops": float(cells["GFLOP / step"]) * 1e9}}
    return {**run, "models": models, "reference": reference}


def _short(name: str) -> str:
    return name.replace("dual-stream, ", "")


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [3, 3, 2]}, layout="constrained")
    width = 0.8 / len(MODES)
    ref = results["reference"]
    for ax, (title, score) in zip(axes, METRICS.items()):
        for k, (label, mode) in enumerate(MODES.items()):
            sets = [results["models"][n]["sets"].get(mode) for n in names]
            points = [(i + (k - 1) * width, score(m)) for i, m in enumerate(sets) if m is not None and score(m) is not None]
            ax.bar([x for x, _ in points], [y for _, y in points], width, label=label)
        ax.axhline(score(ref["real"]), color="k", lw=1, label="real clips")
        ax.axhline(score(ref["shuffled"]), color="k", lw=1, ls="--", label="shuffled real pairs (chance)")
        ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=5, fontsize=8)
    fig.suptitle(f"{results['steps']} training steps x {results['batch']} clips, about "
                 f"{results['budget'] / 1e6:.2f}M parameters each; {results['clips']} held-out clips read back from mp4",
                 fontsize=10)
    right = axes[2]
    ms = [1000 * results["models"][n]["cost"]["time_s"] for n in names]
    gflop = [results["models"][n]["cost"]["flops"] / 1e9 for n in names]
    right.bar(range(len(names)), ms, color="tab:gray")
    for i, (m, g) in enumerate(zip(ms, gflop)):
        right.text(i, m, f"{g:.1f}", ha="center", va="bottom", fontsize=7)
    right.set_xticks(range(len(names)), [_short(n) for n in names], rotation=30, ha="right")
    right.set_title(f"one training step\n(batch {results['batch']}, 1 thread; GFLOP above each bar)", fontsize=9)
    right.set_ylabel("ms")
    right.set_ylim(0, 1.25 * max(ms))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
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
