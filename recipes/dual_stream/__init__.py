"""A dual-stream DiT: video and audio each their own stream and width, joined by a coupling.

- :mod:`.config`: every config of the recipe (the trainer's sections and checks, the evaluation's);
- :mod:`.train`: per-stream flow matching on clips, ending in one pipeline folder
  (:class:`avblocks.pipelines.DualStreamPipeline`);
- :mod:`.evaluate`: AV-sync of a trained run, jointly, audio-to-video and video-to-audio.

The model, its couplings, the codec and the pipeline are the library's
(:mod:`avblocks.dit.dual_stream`, :mod:`avblocks.coupling`, :mod:`avblocks.codecs.pixel_mel`,
:mod:`avblocks.pipelines.dual_stream`); ``benchmarks/couplings.py`` compares the couplings.
"""
