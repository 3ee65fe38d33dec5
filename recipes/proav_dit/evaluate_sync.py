"""Synchrony of a ProAV-DiT run, measured on mp4 files: joint, audio-to-video, video-to-audio.

    avblocks run proav_dit.evaluate_sync run_dir=outputs/demo [clips=32] [seed=0] [steps=16]

Samples ``clips`` held-out clips through ``RUN_DIR/pipeline`` (:class:`~avblocks.pipelines.ProAVDiTPipeline`)
with their labels: jointly (seed), audio-to-video from their sound (seed + 1) and video-to-audio
from their pictures (seed + 2); then :func:`recipes.common.sync_eval.evaluate_sets` writes the mp4
files, reads them back and writes ``metrics.json`` and ``metrics.md`` (event F1, AV-Align,
onset counts and timing, picture integrity, next to real, shuffled and shifted pairs).
"""

from avblocks.pipelines import ProAVDiTPipeline
from recipes.common import sync_eval

__all__ = ["evaluate", "main"]


def evaluate(cfg: sync_eval.SyncEvalConfig) -> dict:
    pipe, spec, real = sync_eval.open_run(cfg, ProAVDiTPipeline)
    generated = sync_eval.three_modes(pipe, real, cfg)
    return sync_eval.evaluate_sets(sync_eval.output_dir(cfg), generated, real, spec, cfg, num_classes=pipe.num_classes,
                                   extra={"system": "proav_dit", "steps": cfg.steps or pipe.sampling.steps})


def main(argv=None) -> dict:
    return sync_eval.sync_eval_main(evaluate, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
