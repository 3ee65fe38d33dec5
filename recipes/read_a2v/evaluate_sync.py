"""Synchrony of a READ run, measured on mp4 files: audio-to-video from held-out clips.

    avblocks run read_a2v.evaluate_sync run_dir=outputs/read_a2v_tiny [clips=32] [seed=0] [steps=10]

Each of ``clips`` held-out clips drives one generation through ``RUN_DIR/pipeline``
(:class:`~avblocks.pipelines.ReadPipeline`): its sound and its first frame as the reference,
as many frames as the clip has, seed ``seed + i`` for clip ``i``; then
:func:`recipes.common.sync_eval.evaluate_sets` writes the mp4 files, reads them back and writes
``metrics.json`` and ``metrics.md`` next to real, shuffled and shifted pairs.
(``read_a2v.evaluate`` measures long generation: clip boundaries and speed.)
"""

import torch

from avblocks.pipelines import ReadPipeline, SoundingVideo
from recipes.common import sync_eval

__all__ = ["evaluate", "main"]


def evaluate(cfg: sync_eval.SyncEvalConfig) -> dict:
    pipe, spec, real = sync_eval.open_run(cfg, ReadPipeline, any_length=True)
    clips = [pipe(real["audio"][i], real["video"][i, :, 0], frames=spec.num_frames, steps=cfg.steps, seed=cfg.seed + i)
             for i in range(len(real["label"]))]
    generated = SoundingVideo(torch.cat([c.video for c in clips]), torch.cat([c.audio for c in clips]), spec,
                              real["label"])
    return sync_eval.evaluate_sets(sync_eval.output_dir(cfg), {"audio_to_video": generated}, real, spec, cfg,
                                   num_classes=cfg.data.num_classes,
                                   extra={"system": "read_a2v", "steps": cfg.steps or pipe.sampling.steps})


def main(argv=None) -> dict:
    return sync_eval.sync_eval_main(evaluate, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
