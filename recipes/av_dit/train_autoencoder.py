"""Stage 1 of AV-DiT: train the per-frame image autoencoder on video frames and spectrogram images.

    python -m recipes.av_dit.train_autoencoder --config recipes/av_dit/configs/autoencoder_tiny.yaml [key=value ...]

AV-DiT uses one pretrained image VAE (Stable Diffusion's) for both modalities; here the
:class:`~avblocks.latent.ImageAutoencoder` is trained on the synthetic set's images: every
video frame and every spectrogram image of a clip (the layout of
:class:`avblocks.codecs.ImageLatentCodec`). With diffusers installed, a local ``AutoencoderKL``
folder can replace this stage (:class:`~avblocks.latent.image_autoencoder.DiffusersImageAutoencoder`).

Losses (per modality, then summed with ``loss.audio`` weighting the audio images, so the 4
audio images of a clip count as much as its 16 frames at weight 1): L1 plus ``loss.pixel_mse``
x squared error on pixels (squared error breaks the "background only" plateau on small moving
objects, as in ProAV-DiT's MDSA training), and ``loss.kl`` x the KL of the Gaussian
posterior (per image, batch mean; small, as SD's 1e-6 scale).

The training images are rendered and cached in memory once (``N x 3 x (t + ta) x h x w``).
Writes ``run.output_dir``: ``config.yaml``, ``checkpoints/``, ``log.jsonl``, ``model/`` (EMA
weights, latent scale calibrated to unit std on the first ``run.calibration_clips`` clips),
``eval.json`` (held-out PSNR of frames, L1 of audio images and of audio frames after the
whole image round trip).
"""


import torch
import torch.nn.functional as F

from avblocks.atomic import atomic_write_json
from avblocks.codecs import ImageLatentCodec
from avblocks.device import to_device
from avblocks.latent.image_autoencoder import ImageAutoencoder
from recipes.av_dit.codec import encode_clips
from recipes.av_dit.config import AutoencoderLossConfig, AutoencoderRecipe
from recipes.av_dit.trainer import train_module
from recipes.common import distributed as dist_utils
from recipes.common.data import ClipData
from recipes.common.estimates import require_clips_fit, require_model_fits
from recipes.common.loop import run_entry_point, start_run


def build_autoencoder(cfg: AutoencoderRecipe) -> ImageAutoencoder:
    m = cfg.model
    return ImageAutoencoder(in_channels=3, latent_channels=m.latent_channels, hidden_channels=m.hidden_channels,
                            downsample=m.downsample, depth=m.depth, groups=m.groups)


def reconstruction_losses(ae: ImageAutoencoder, x: torch.Tensor, frames: int,
                          loss: AutoencoderLossConfig) -> dict[str, torch.Tensor]:
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
def evaluate(ae: ImageAutoencoder, layout: ImageLatentCodec, data: ClipData, num_clips: int) -> dict:
    device = next(ae.parameters()).device
    video, audio, _ = data.model_inputs(to_device(data.held_out_batch(num_clips), device))
    x = layout.to_images(video, audio)
    recon = ae.decode_frames(ae.encode_frames(x).mean)
    video_hat, audio_hat = layout.from_images(recon)
    mse = F.mse_loss(video_hat, video).item()
    frames = layout.num_frames
    return {"video_psnr_db": round(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item(), 2),
            "audio_image_l1": round((recon[:, :, frames:] - x[:, :, frames:]).abs().mean().item(), 4),
            "audio_frames_l1": round((audio_hat - audio).abs().mean().item(), 4),
            "audio_layout_l1": round(layout.audio_round_trip_error(audio), 4)}


def validate(cfg: AutoencoderRecipe, *, world_size: int = 1) -> None:
    """:meth:`AutoencoderRecipe.validate`, then whether the run fits in memory: every training
    clip is rendered to images and kept (``data.num_clips``), and the model trains."""
    cfg.validate(world_size=world_size)
    if cfg.data.folder is None:  # a folder's clips are counted once it is indexed
        require_clips_fit("data.num_clips (rendered once and kept)", cfg.data.num_clips, cfg.data)
    require_model_fits("model.*", lambda: build_autoencoder(cfg))


def train(cfg: AutoencoderRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    torch.manual_seed(cfg.run.seed)
    data = ClipData(cfg.data)
    layout = ImageLatentCodec(data.spec, audio_images=cfg.audio_images, inverse=data.audio.inverse).to(ctx.device)
    # N 3 (t + ta) h w, rendered once on the device and kept in host memory
    cache, _ = encode_clips(data, layout.to_images, device=ctx.device)
    model = build_autoencoder(cfg)

    def micro_step(batch: dict[str, torch.Tensor], step: int, net) -> dict[str, torch.Tensor]:
        return reconstruction_losses(net, batch["images"], layout.num_frames, cfg.loss)

    fitted, ema = train_module(model, desc="image autoencoder", out=out, ctx=ctx, optim=cfg.optim,
                               run=cfg.run, rows={"images": cache}, micro_step=micro_step, speed=cfg.model,
                               num_workers=cfg.data.num_workers)
    dist_utils.barrier()
    result = fitted.summary()
    ema.copy_to(model)
    model.eval()
    if ctx.is_main:
        scale = model.calibrate_scale(cache[: cfg.run.calibration_clips].to(ctx.device))
        model.save_pretrained(out / "model")
        result |= {"latent_scale": round(scale, 5), "eval": evaluate(model, layout, data, cfg.run.eval_clips)}
        atomic_write_json(out / "eval.json", result["eval"], nan_as_null=True)
    dist_utils.barrier()
    return result


def main(argv=None) -> dict:
    return run_entry_point(AutoencoderRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
