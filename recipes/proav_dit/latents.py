"""The DiT's view of the data: the frozen autoencoder's latents, stacked, and cached on disk.

:class:`LatentSpace` pairs a trained :class:`~avblocks.latent.MDSA` with a
:class:`~avblocks.dit.PlaneStack`: a clip becomes one ``b c 6 s s`` latent (video hw, th, tw,
audio hw, th, tw, each zero-padded into the top-left of an ``s x s`` canvas) and back.

:func:`cached_latents` encodes every training clip once and keeps the result next to the
autoencoder run as ``latents/<key>.safetensors``; the key hashes the autoencoder weights and
the data config, so a retrained autoencoder or other data never reuses a stale cache. The
file is written atomically.
"""

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from avblocks.atomic import atomic_path
from avblocks.dit import PlaneStack
from avblocks.latent.mdsa import MDSA, AVLatent
from recipes.common.config import load_config
from recipes.proav_dit.data import AVData

VIDEO, AUDIO = slice(0, 3), slice(3, 6)


class LatentSpace:
    """Clips <-> stacked latents through a frozen autoencoder."""

    def __init__(self, autoencoder: MDSA, data: AVData, *, multiple: int | tuple[int, ...] = 1):
        """``multiple``: the canvas side is rounded up to a multiple of it (of each, for the
        ``(p, q)`` patch of a denoiser)."""
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.data = data
        c = data.config
        probe_video = torch.zeros(1, 3, c.num_frames, c.size, c.size)
        probe_audio = torch.zeros(1, 1, c.num_frames, c.n_mels, data.frames.frame_columns)
        with torch.no_grad():
            planes = autoencoder.encode(probe_video, probe_audio).planes()
        self.stack = PlaneStack(shapes=[tuple(p.shape[2:]) for p in planes], channels=planes[0].shape[1],
                                multiple=math.lcm(*multiple) if isinstance(multiple, tuple) else multiple)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, multiple: int | tuple[int, ...] = 1) -> "LatentSpace":
        """From an autoencoder run folder (its config.yaml and model/)."""
        from recipes.proav_dit.train_autoencoder import AutoencoderRecipe

        run_dir = Path(run_dir)
        config = load_config(AutoencoderRecipe, run_dir / "config.yaml")
        return cls(MDSA.from_pretrained(run_dir / "model"), AVData(config.data), multiple=multiple)

    @property
    def valid_mask(self) -> torch.Tensor:
        """``6 s s``, True on real latent cells (the rest is padding)."""
        return self.stack.valid_mask

    @torch.no_grad()
    def encode(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.stack.stack(self.autoencoder.encode(video, audio).planes())

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked latent -> ``(video b 3 t h w in [-1, 1], normalised audio frames b 1 t f w)``."""
        video, audio = self.autoencoder.decode(AVLatent.from_planes(list(self.stack.unstack(latent))))
        return video.clamp(-1, 1), audio


def _cache_key(run_dir: Path, data: AVData) -> str:
    digest = hashlib.sha1()
    digest.update((run_dir / "model" / "model.safetensors").read_bytes())
    digest.update(json.dumps(asdict(data.config), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_latents(space: LatentSpace, run_dir: str | Path, *, batch_size: int = 32,
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """``{"latents": N c 6 s s, "labels": N}`` for the whole training set, encoded once."""
    run_dir = Path(run_dir)
    path = run_dir / "latents" / f"{_cache_key(run_dir, space.data)}.safetensors"
    if path.is_file():
        return load_file(path)
    dataset = space.data.dataset
    latents, labels = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="encoding latents", disable=not progress):
        batch = torch.utils.data.default_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        video, audio, label = space.data.model_inputs(batch)
        latents.append(space.encode(video, audio))
        labels.append(label)
    result = {"latents": torch.cat(latents).contiguous(), "labels": torch.cat(labels)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(result, str(tmp))
    return result
