"""Synchrony of an AV-DiT run, measured on mp4 files: joint generation.

    avblocks run av_dit.evaluate_sync run_dir=outputs/av_dit/adapters [clips=32] [seed=0] [steps=25]

Samples ``clips`` clips with the held-out clips' labels through ``RUN_DIR/pipeline``
(:class:`~avblocks.pipelines.AVDiTPipeline`, its own sampler and guidance) with ``seed``;
then :func:`recipes.common.sync_eval.evaluate_sets` writes the mp4 files, reads them back and
writes ``metrics.json`` and ``metrics.md`` next to real, shuffled and shifted pairs.
"""

from pathlib import Path

from avblocks.pipelines import AVDiTPipeline
from recipes.common.sync_eval import (
    SyncEvalConfig,
    evaluate_sets,
    held_out,
    output_dir,
    spec_check,
    sync_eval_main,
)

__all__ = ["evaluate", "main"]


def evaluate(cfg: SyncEvalConfig) -> dict:
    folder = Path(cfg.run_dir) / "pipeline"
    pipe = AVDiTPipeline.from_pretrained(folder)
    spec_check(pipe.spec, cfg.data, folder)
    real = held_out(cfg)
    generated = {"joint": pipe(labels=real["label"], seed=cfg.seed, steps=cfg.steps, progress=cfg.progress)}
    return evaluate_sets(output_dir(cfg), generated, real, pipe.spec, cfg, num_classes=pipe.denoiser.num_clip_classes,
                         extra={"system": "av_dit", "pipeline": str(folder),
                                "steps": cfg.steps or pipe.sampling.steps, "cfg_scale": pipe.sampling.cfg_scale})


def main(argv=None) -> dict:
    return sync_eval_main(evaluate, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
