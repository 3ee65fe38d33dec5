"""The MDSA ablation: the tiny autoencoder with each attention stage switched off, same budget.

    avblocks run proav_dit.ablate_autoencoder [minutes=4] [jobs=2] [output_dir=outputs/ablation]

Trains ``configs/autoencoder_tiny.yaml`` once with every fusion stage and once without each
of them (MT-SelfAttn, hw self-attention, GCM-Attn, Bi-Block), each for ``minutes`` of wall
time, ``jobs`` at a time (one thread each), then writes ``ablation.md``: reconstruction
PSNR/SSIM, audio log-spectral distance, mel L1, event sync of the reconstruction and the
event recall per modality. Runs already finished in ``output_dir`` are reused.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from avblocks.atomic import atomic_write_text
from avblocks.latent.fusion import STAGES
from recipes.common.config import parse_cli
from recipes.proav_dit.config import AblationConfig

CONFIG = Path(__file__).parent / "configs" / "autoencoder_tiny.yaml"
COLUMNS = ["psnr", "ssim", "lsd", "mel_l1", "sync_reconstruction", "event_recall_video",
           "event_recall_audio", "steps"]


def variants() -> dict[str, list[str]]:
    runs = {"all stages": list(STAGES)}
    for stage in STAGES:
        runs[f"without {stage}"] = [s for s in STAGES if s != stage]
    return runs


def command(out: Path, stages: list[str], minutes: float) -> list[str]:
    return [sys.executable, "-m", "recipes.proav_dit.train_autoencoder", "--config", str(CONFIG),
            f"run.output_dir={out}", f"run.max_minutes={minutes}", "run.progress=false",
            f"model.stages=[{', '.join(stages)}]"]


def main(argv=None) -> str:
    cfg = parse_cli(AblationConfig, argv, description=__doc__.splitlines()[0])
    out = Path(cfg.output_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    pending = [(name, out / name.replace(" ", "_"), stages) for name, stages in variants().items()]
    todo = [(n, d, s) for n, d, s in pending if not (d / "eval" / "metrics.json").is_file()]
    running: list[subprocess.Popen] = []
    for name, folder, stages in todo:
        while len(running) >= cfg.jobs:
            running.pop(0).wait()
        folder.mkdir(parents=True, exist_ok=True)
        print(f"training: {name}", flush=True)
        running.append(subprocess.Popen(command(folder, stages, cfg.minutes), env=env,
                                        stdout=open(folder / "stdout.log", "w"), stderr=subprocess.STDOUT))
    for process in running:
        process.wait()
    header = "| variant | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1) + "\n"
    rows = []
    for name, folder, _ in pending:
        metrics = json.loads((folder / "eval" / "metrics.json").read_text())
        metrics["steps"] = max(int(p.stem.split("_")[1]) for p in (folder / "checkpoints").glob("step_*.pt"))
        rows.append(f"| {name} | " + " | ".join(
            f"{metrics[c]:.3f}" if isinstance(metrics.get(c), float) else str(metrics.get(c, "-")) for c in COLUMNS
        ) + " |")
    table = header + "\n".join(rows) + "\n"
    atomic_write_text(out / "ablation.md", f"{cfg.minutes} min per run, {cfg.jobs} at a time\n\n" + table)
    print(table)
    return table


if __name__ == "__main__":
    main()
