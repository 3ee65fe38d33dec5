"""Stage 1 of AV-DiT: train the per-frame image autoencoder on video frames and spectrogram images.

    python -m recipes.av_dit.train_autoencoder --config recipes/av_dit/configs/autoencoder_tiny.yaml [key=value ...]

AV-DiT uses one pretrained image VAE (Stable Diffusion's) for both modalities; here the
:class:`~avblocks.latent.ImageAutoencoder` is trained on the synthetic set's images: every
video frame and every spectrogram image of a clip (:class:`recipes.av_dit.images.AVImages`).
With diffusers installed, a local ``AutoencoderKL`` folder can replace this stage
(:class:`~avblocks.latent.image_autoencoder.DiffusersImageAutoencoder`).

Losses (per modality, then summed with ``loss.audio`` weighting the audio images, so the 4
audio images of a clip count as much as its 16 frames at weight 1): L1 plus ``loss.pixel_mse``
x squared error on pixels (squared error breaks the "background only" plateau on small moving
objects, see :mod:`recipes.proav_dit.train_autoencoder`), and ``loss.kl`` x the KL of the
Gaussian posterior (per image, batch mean; small, as SD's 1e-6 scale).

The training images are rendered and cached in memory once (``N x 3 x (t + ta) x h x w``).
Writes ``run.output_dir``: ``config.yaml``, ``checkpoints/``, ``log.jsonl``, ``model/`` (EMA
weights, latent scale calibrated to unit std on the first ``run.calibration_clips`` clips),
``eval.json`` (held-out PSNR of frames, L1 of audio images and of audio frames after the
whole image round trip).
"""

import json
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from avblocks.latent.image_autoencoder import ImageAutoencoder
from recipes.av_dit.images import AVImages
from recipes.av_dit.trainer import (
    OptimConfig,
    RunConfig,
    need,
    train_module,
    validate_common,
)
from recipes.common import distributed as dist_utils
from recipes.common.loop import run_entry_point, start_run
from recipes.proav_dit.data import AVData, DataConfig


@dataclass
class ImageAutoencoderModelConfig:
    latent_channels: int = 4
    hidden_channels: int = 64
    downsample: int = 4
    depth: int = 2
    groups: int = 8


@dataclass
class AutoencoderLossConfig:
    pixel_mse: float = 4.0
    kl: float = 1e-6
    audio: float = 1.0


@dataclass
class AutoencoderRunConfig(RunConfig):
    output_dir: str = "outputs/av_dit_autoencoder"
    calibration_clips: int = 32
    eval_clips: int = 16


@dataclass
class AutoencoderRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    audio_images: int = 4  # spectrogram images per clip (see recipes.av_dit.images)
    model: ImageAutoencoderModelConfig = field(default_factory=ImageAutoencoderModelConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, batch_size=8))
    run: AutoencoderRunConfig = field(default_factory=AutoencoderRunConfig)


def validate(cfg: AutoencoderRecipe, *, world_size: int = 1) -> None:
    validate_common(cfg.optim, cfg.run, world_size=world_size)
    d, m = cfg.data, cfg.model
    need(cfg.audio_images >= 1 and d.num_frames % cfg.audio_images == 0,
         f"audio_images ({cfg.audio_images}) must divide data.num_frames ({d.num_frames})")
    need(m.downsample >= 1 and d.size % m.downsample == 0,
         f"model.downsample ({m.downsample}) must divide data.size ({d.size})")
    need(m.groups >= 1 and m.hidden_channels % m.groups == 0,
         f"model.groups ({m.groups}) must divide model.hidden_channels ({m.hidden_channels})")
    need(cfg.run.calibration_clips >= 1, f"run.calibration_clips ({cfg.run.calibration_clips}) must be >= 1")


def build_autoencoder(cfg: AutoencoderRecipe) -> ImageAutoencoder:
    m = cfg.model
    return ImageAutoencoder(in_channels=3, latent_channels=m.latent_channels, hidden_channels=m.hidden_channels,
                            downsample=m.downsample, depth=m.depth, groups=m.groups)


@torch.no_grad()
def render_images(images: AVImages, dataset, *, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images N 3 (t + ta) h w, labels N)`` for every clip of ``dataset``."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out, labels = [], []
    for batch in loader:
        video, audio, label = images.data.model_inputs(batch)
        out.append(images.to_images(video, audio))
        labels.append(label)
    return torch.cat(out), torch.cat(labels)


def reconstruction_losses(ae: ImageAutoencoder, x: torch.Tensor, frames: int, loss) -> dict[str, torch.Tensor]:
    """Losses of a batch of clip images ``b 3 (t + ta) h w`` (video frames first)."""
    flat = x.transpose(1, 2).flatten(0, 1)  # (b n) 3 h w
    recon, posterior = ae(flat)
    err = (recon - flat).unflatten(0, (x.shape[0], x.shape[2]))  # b n 3 h w
    parts = {}
    for name, piece in (("video", err[:, :frames]), ("audio", err[:, frames:])):
        parts[name] = piece.abs().mean() + loss.pixel_mse * piece.square().mean()
    parts["kl"] = posterior.kl()
    parts["total"] = parts["video"] + loss.audio * parts["audio"] + loss.kl * parts["kl"]
    return parts


@torch.no_grad()
def evaluate(ae: ImageAutoencoder, images: AVImages, num_clips: int) -> dict:
    batch = images.data.held_out_batch(num_clips)
    video, audio, _ = images.data.model_inputs(batch)
    x = images.to_images(video, audio)
    recon = ae.decode_frames(ae.encode_frames(x).mean)
    video_hat, audio_hat = images.from_images(recon)
    mse = F.mse_loss(video_hat, video).item()
    return {"video_psnr_db": round(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item(), 2),
            "audio_image_l1": round((recon[:, :, images.num_frames:] - x[:, :, images.num_frames:]).abs().mean().item(), 4),
            "audio_frames_l1": round((audio_hat - audio).abs().mean().item(), 4),
            "audio_layout_l1": round(images.audio_round_trip_error(audio), 4)}


def train(cfg: AutoencoderRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    torch.manual_seed(cfg.run.seed)
    data = AVData(cfg.data)
    images = AVImages(data, audio_images=cfg.audio_images)
    cache, _ = render_images(images, data.dataset)
    model = build_autoencoder(cfg)

    def micro_step(index: list[int], step: int, net) -> dict[str, torch.Tensor]:
        return reconstruction_losses(net, cache[index], images.num_frames, cfg.loss)

    fitted, ema = train_module(model, desc="image autoencoder", out=out, ctx=ctx, optim=cfg.optim,
                               run=cfg.run, num_items=len(cache), micro_step=micro_step)
    dist_utils.barrier()
    result = fitted.summary()
    ema.copy_to(model)
    model.eval()
    if ctx.is_main:
        scale = model.calibrate_scale(cache[: cfg.run.calibration_clips])
        model.save_pretrained(out / "model")
        result |= {"latent_scale": round(scale, 5), "eval": evaluate(model, images, cfg.run.eval_clips)}
        (out / "eval.json").write_text(json.dumps(result["eval"], indent=2))
    dist_utils.barrier()
    return result


def main(argv=None) -> dict:
    return run_entry_point(AutoencoderRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
