"""Synchrony of an AV-DiT run, measured on mp4 files: joint generation.

    avblocks run av_dit.evaluate_sync run_dir=outputs/av_dit/adapters [clips=32] [seed=0] [steps=25]

Samples ``clips`` clips with the held-out clips' labels through ``RUN_DIR/pipeline``
(:class:`~avblocks.pipelines.AVDiTPipeline`, its own sampler and guidance) with ``seed``;
then :func:`recipes.common.sync_eval.evaluate_sets` writes the mp4 files, reads them back and
writes ``metrics.json`` and ``metrics.md`` next to real, shuffled and shifted pairs.
"""

from avblocks.pipelines import AVDiTPipeline
from recipes.common import sync_eval

__all__ = ["evaluate", "main"]


def evaluate(cfg: sync_eval.SyncEvalConfig) -> dict:
    pipe, spec, real = sync_eval.open_run(cfg, AVDiTPipeline)
    generated = {"joint": pipe(labels=real["label"], seed=cfg.seed, steps=cfg.steps, progress=cfg.progress)}
    return sync_eval.evaluate_sets(sync_eval.output_dir(cfg), generated, real, spec, cfg,
                                   num_classes=pipe.denoiser.num_clip_classes,
                                   extra={"system": "av_dit", "steps": cfg.steps or pipe.sampling.steps,
                                          "cfg_scale": pipe.sampling.cfg_scale})


def main(argv=None) -> dict:
    return sync_eval.sync_eval_main(evaluate, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
