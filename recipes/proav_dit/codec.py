"""The tri-plane codec of a trained autoencoder run, and the latent cache the denoiser trains on.

:func:`load_codec` reads an autoencoder run folder (``train_autoencoder``'s output: its
``config.yaml`` and ``model/``) into the library's :class:`~avblocks.codecs.TriPlaneCodec`,
with the canvas laid out for the denoiser's patch.

:func:`cached_latents` encodes every training clip once and keeps the result next to the
autoencoder run as ``latents/<key>/`` (:mod:`recipes.common.latent_cache`: written in shards
as it is encoded, read memory-mapped, so a set larger than RAM trains); the key hashes the
autoencoder weights, the data config and the plane layout (canvas side, or the packed plane
shapes), so a retrained autoencoder, other data, another patch or layout never reuses a stale
cache. The clips are decoded by ``data.num_workers`` loader processes and encoded on the
codec's device.
"""

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from avblocks.codecs import TriPlaneCodec
from avblocks.config import config_to_dict
from avblocks.device import pin_memory, to_device
from avblocks.latent.mdsa import MDSA
from recipes.common.config import load_config
from recipes.common.data import ClipData
from recipes.common.latent_cache import ShardedRows, open_shards, write_shards
from recipes.proav_dit.config import AutoencoderRecipe

__all__ = ["load_codec", "cached_latents"]


def load_codec(run_dir: str | Path, *, patch: int | tuple[int, int] = 1,
               layout: str = "canvas") -> tuple[TriPlaneCodec, ClipData]:
    """``(codec, data)`` of an autoencoder run folder; ``patch`` is the denoiser's, ``layout``
    the plane layout (``"canvas"`` or ``"packed"``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not an autoencoder run folder (no config.yaml): "
                                "train one with proav_dit.train_autoencoder")
    config = load_config(AutoencoderRecipe, run_dir / "config.yaml")
    data = ClipData(config.data)
    codec = TriPlaneCodec(data.spec, MDSA.from_pretrained(run_dir / "model"), patch=patch, layout=layout,
                          inverse=data.audio.inverse)
    return codec, data


def _cache_key(run_dir: Path, data: ClipData, codec: TriPlaneCodec) -> str:
    digest = hashlib.sha1()
    digest.update((run_dir / "model" / "model.safetensors").read_bytes())
    clips = {k: v for k, v in config_to_dict(data.config).items() if k != "num_workers"}  # not what, how
    digest.update(json.dumps(clips, sort_keys=True).encode())
    digest.update((str(codec.side) if codec.layout_name == "canvas" else f"packed {codec.plane_shapes}").encode())
    return digest.hexdigest()[:16]


def cached_latents(codec: TriPlaneCodec, data: ClipData, run_dir: str | Path, *, batch_size: int = 32,
                   shard_clips: int = 4096, progress: bool = True) -> dict[str, ShardedRows]:
    """``{"latents": N c 6 s s (canvas) or N c L (packed), "labels": N}`` of the whole training
    set, encoded once (on the codec's device, ``shard_clips`` clips per shard) and memory-mapped."""
    run_dir = Path(run_dir)
    folder = run_dir / "latents" / _cache_key(run_dir, data, codec)
    if (cache := open_shards(folder)) is not None:
        return cache
    device = codec.valid_mask.device
    data.to(device)
    workers = data.config.num_workers
    # its own generator: the iterator's base seed drawn from the global RNG would shift the
    # stream the denoiser's initialisation and noise come from
    loader = DataLoader(data.dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=pin_memory(device), generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def encoded():
        for batch in tqdm(loader, desc="encoding latents", disable=not progress):
            video, audio, label = data.model_inputs(to_device(batch, device))
            yield {"latents": codec.encode_frames(video, audio), "labels": label}

    write_shards(folder, encoded(), shard_rows=shard_clips)
    return open_shards(folder)
