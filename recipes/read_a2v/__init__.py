"""READ-style audio-to-video: a reference frame and an audio track in, a long video out.

- :mod:`.config`: every config of the recipe (the trainer's sections and checks, the entry points');
- :mod:`.train`: the two training stages (frame-aligned audio codec, then the denoiser), ending
  in one pipeline folder (:class:`avblocks.pipelines.ReadPipeline`);
- :mod:`.video_embedder`: the per-frame video embedding the codec is trained against;
- :mod:`.generate`: a trained run's pipeline driven by a held-out clip, streamed to an mp4;
- :mod:`.evaluate`: AV-sync, clip-boundary discontinuity and generation speed.

The model, the codec, long generation and the mp4 writer are the library's
(:mod:`avblocks.dit.read_denoiser`, :mod:`avblocks.codecs`, :mod:`avblocks.diffusion.long_generation`,
:mod:`avblocks.data.mp4`).
"""
