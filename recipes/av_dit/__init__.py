"""AV-DiT (Wang et al., 2024): a frozen image DiT shared by audio and video, with trainable adapters.

Stages (each a ``python -m`` entry point with a YAML config and ``key=value`` overrides):

1. :mod:`recipes.av_dit.train_autoencoder`: the per-frame image autoencoder on video frames
   and spectrogram images;
2. :mod:`recipes.av_dit.pretrain`: the class-conditional image DiT on single images (the
   synthetic stand-in for ImageNet pretraining), or skip it and load an original DiT checkpoint;
3. :mod:`recipes.av_dit.train`: the adapters on top of the frozen DiT;
4. :mod:`recipes.av_dit.sample`: mp4 files with sound and PNGs;
5. :mod:`recipes.av_dit.compare`: AV-DiT next to a ProAV-DiT run at equal training minutes.

See docs/av_dit.md.
"""
