"""AV-DiT (Wang et al., 2024): a frozen image DiT shared by audio and video, with trainable adapters.

Stages (each a ``python -m`` entry point with a YAML config and ``key=value`` overrides; every
config section is in :mod:`recipes.av_dit.config`):

1. :mod:`recipes.av_dit.train_autoencoder`: the per-frame image autoencoder on video frames
   and spectrogram images;
2. :mod:`recipes.av_dit.pretrain`: the class-conditional image DiT on single images (the
   synthetic stand-in for ImageNet pretraining), or skip it and load an original DiT checkpoint;
3. :mod:`recipes.av_dit.train`: the adapters on top of the frozen DiT; it ends by saving the
   sampling pipeline (``run.output_dir/pipeline``: ``avblocks sample FOLDER`` or
   :class:`avblocks.pipelines.AVDiTPipeline`);
4. :mod:`recipes.av_dit.compare`: AV-DiT next to a ProAV-DiT run at equal training minutes.

See docs/av_dit.md.
"""
