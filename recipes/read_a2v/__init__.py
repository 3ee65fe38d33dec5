"""READ-style audio-to-video: a reference frame and an audio track in, a long video out.

- :mod:`.model`: the denoiser (pixel frames, per-frame audio cross-attention) and the video
  embedder of the codec stage;
- :mod:`.train`: the two training stages (frame-aligned audio codec, then the denoiser);
- :mod:`.generate`: long generation, clip after clip, streamed to an mp4;
- :mod:`.evaluate`: AV-sync, clip-boundary discontinuity and generation speed.
"""
