"""The codec an autoencoder run trained, and clips turned into its images or latents once.

    codec, data = load_codec("outputs/av_dit/autoencoder")
    latents, labels = encode_clips(data, codec.encode_frames)     # N z (t + ta) h' w', N

The image layout, the frozen autoencoder and the audio inverse are the library's
:class:`~avblocks.codecs.ImageLatentCodec`; the recipe only knows where they come from: the
run's ``config.yaml`` (its ``data`` section and ``audio_images``) and its ``model/`` folder.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from avblocks.codecs import ImageLatentCodec
from avblocks.device import HOST, pin_memory, to_device
from avblocks.latent.image_autoencoder import ImageAutoencoder
from recipes.av_dit.config import AutoencoderRecipe
from recipes.common.config import load_config
from recipes.common.data import ClipData


def load_codec(run_dir: str | Path) -> tuple[ImageLatentCodec, ClipData]:
    """``(codec, the run's data)`` of a :mod:`recipes.av_dit.train_autoencoder` run folder."""
    run_dir = Path(run_dir)
    cfg = load_config(AutoencoderRecipe, run_dir / "config.yaml")
    autoencoder = ImageAutoencoder.from_pretrained(run_dir / "model")
    data = ClipData(cfg.data)
    codec = ImageLatentCodec(data.spec, autoencoder, audio_images=cfg.audio_images, inverse=data.audio.inverse)
    return codec, data


@torch.no_grad()
def encode_clips(data: ClipData, encode: Callable[[Tensor, Tensor], Tensor], *,
                 batch_size: int = 32, device: torch.device = HOST) -> tuple[Tensor, Tensor]:
    """``(encode(video, audio frames) of every clip of data.dataset, in order; labels N)``,
    kept in host memory; the clips are decoded by ``data.num_workers`` loader processes and
    encoded on ``device`` (where ``encode``'s module is)."""
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=data.config.num_workers, pin_memory=pin_memory(device))
    data.to(device)
    encoded, labels = [], []
    for batch in loader:
        video, frames, label = data.model_inputs(to_device(batch, device))
        encoded.append(encode(video, frames).to(HOST))
        labels.append(label.to(HOST))
    return torch.cat(encoded), torch.cat(labels)
