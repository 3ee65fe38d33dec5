"""A dual-stream DiT: video and audio each their own stream and width, joined by a coupling.

- :mod:`.config`: the trainer's config sections and their checks;
- :mod:`.train`: per-stream flow matching on clips, ending in one pipeline folder
  (:class:`avblocks.pipelines.DualStreamPipeline`);
- :mod:`.evaluate_sync`: synchrony of a trained run on mp4 files (event F1, AV-Align, ...), jointly,
  audio-to-video and video-to-audio (:mod:`recipes.common.sync_eval`).

The model, its couplings, the codec and the pipeline are the library's
(:mod:`avblocks.dit.dual_stream`, :mod:`avblocks.coupling`, :mod:`avblocks.codecs.pixel_mel`,
:mod:`avblocks.pipelines.dual_stream`); ``benchmarks/couplings.py`` compares the couplings.
"""
