"""The tiny autoencoder run the reliability tests train: seconds a run, on the synthetic set.

Each test adds its own step count and checkpoint cadence (a later ``key=value`` wins).
"""

AUTOENCODER = [
    "data.num_clips=8", "data.num_frames=8", "data.size=16",
    "model.hidden_channels=16", "model.latent_channels=4", "model.depth=1", "model.heads=2",
    "model.groups=2", "model.block_frames=2", "optim.batch_size=2", "optim.warmup=1",
    "run.log_every=1", "run.eval_clips=1", "run.progress=false",
]
