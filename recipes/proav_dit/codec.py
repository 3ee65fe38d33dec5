"""The tri-plane codec of a trained autoencoder run, and the latent cache the denoiser trains on.

:func:`load_codec` reads an autoencoder run folder (``train_autoencoder``'s output: its
``config.yaml`` and ``model/``) into the library's :class:`~avblocks.codecs.TriPlaneCodec`,
with the canvas laid out for the denoiser's patch.

:func:`cached_latents` encodes every training clip once and keeps the result next to the
autoencoder run as ``latents/<key>.safetensors``; the key hashes the autoencoder weights, the
data config and the plane layout (canvas side, or the packed plane shapes), so a retrained
autoencoder, other data, another patch or layout never reuses a stale cache. The file is written atomically.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from avblocks.atomic import atomic_path
from avblocks.codecs import TriPlaneCodec
from avblocks.config import config_to_dict
from avblocks.latent.mdsa import MDSA
from avblocks.saveload import reading
from recipes.common.config import load_config
from recipes.common.data import ClipData
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
    digest.update(json.dumps(config_to_dict(data.config), sort_keys=True).encode())
    digest.update((str(codec.side) if codec.layout_name == "canvas" else f"packed {codec.plane_shapes}").encode())
    return digest.hexdigest()[:16]


def cached_latents(codec: TriPlaneCodec, data: ClipData, run_dir: str | Path, *, batch_size: int = 32,
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """``{"latents": N c 6 s s (canvas) or N c L (packed), "labels": N}`` for the whole
    training set, encoded once."""
    run_dir = Path(run_dir)
    path = run_dir / "latents" / f"{_cache_key(run_dir, data, codec)}.safetensors"
    if path.is_file():
        with reading(path):
            return load_file(path)
    dataset = data.dataset
    latents, labels = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="encoding latents", disable=not progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        video, audio, label = data.model_inputs(torch.utils.data.default_collate(items))
        latents.append(codec.encode_frames(video, audio))
        labels.append(label)
    result = {"latents": torch.cat(latents).contiguous(), "labels": torch.cat(labels)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(result, str(tmp))
    return result
