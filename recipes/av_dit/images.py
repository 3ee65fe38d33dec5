"""Clips as images: AV-DiT sees a sounding video as ``tv`` video frames and ``ta`` spectrogram images.

AV-DiT runs one *image* model (autoencoder and DiT) on both modalities, so the audio must
become images of the video frames' size. Our layout (the paper turns a clip's spectrogram into
one image; we keep more time resolution, see below):

- Audio is the normalised log-mel of the clip (:class:`recipes.proav_dit.data.AVData`:
  64 mel bins, ``w`` columns per video frame), concatenated to one spectrogram
  ``f x (t w)`` (exactly the clip's spectrogram, :class:`avblocks.audio.VideoLikeAudio`).
- It is cut along time into ``ta`` equal pieces (``audio_images``, which must divide the
  number of frames ``t``): audio image ``j`` holds the sound of video frames
  ``[j t/ta, (j+1) t/ta)``, so the fusion block can line audio images up with frame groups.
- Each piece (``f x (t w / ta)``, e.g. 64 x 40 for 16 frames at 8 fps, hop 200, ``ta = 4``) is
  resized to the frame size ``h x w`` (bilinear, anti-aliased; 32 x 32 for the tiny set), with
  low frequencies in the top row, and repeated over the 3 colour channels (one codec for both
  modalities, as AV-DiT shares SD's VAE). Back: mean of the channels, bilinear resize to
  ``f x (t w / ta)``, reshape to video-like frames ``b 1 t f w``.
- The resize costs frequency resolution (64 mel bins -> 32 rows) and a little time resolution
  (40 columns -> 32); one image per clip (the paper's layout) would squeeze 160 columns into
  32, 4 pixels per video frame, too coarse for frame-accurate onsets. :meth:`audio_round_trip_error`
  measures what the layout itself loses.

:class:`ImageLatents` then pairs this with a frozen :class:`~avblocks.latent.ImageAutoencoder`:
one clip <-> one latent ``b z (tv + ta) h' w'`` (video frames first, then audio images), the
one tensor the samplers move (per-frame timesteps along axis 2 apply per image).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from avblocks.latent.image_autoencoder import ImageAutoencoder
from recipes.proav_dit.data import AVData


class AVImages:
    """Clips (video ``b 3 t h w``, audio frames ``b 1 t f w``) <-> images ``b 3 (t + ta) h w``."""

    def __init__(self, data: AVData, *, audio_images: int):
        c = data.config
        if audio_images < 1 or c.num_frames % audio_images:
            raise ValueError(f"audio_images ({audio_images}) must divide data.num_frames ({c.num_frames})")
        self.data = data
        self.num_frames, self.audio_images = c.num_frames, audio_images
        self.size = (c.size, c.size)
        self.mel_bins, self.frame_columns = c.n_mels, data.frames.frame_columns
        self.piece_columns = c.num_frames * self.frame_columns // audio_images

    @property
    def num_images(self) -> int:
        return self.num_frames + self.audio_images

    def audio_to_images(self, audio: torch.Tensor) -> torch.Tensor:
        """Normalised audio frames ``b 1 t f w`` -> spectrogram images ``b 3 ta h w``."""
        if audio.shape[1:] != (1, self.num_frames, self.mel_bins, self.frame_columns):
            raise ValueError(f"audio frames {tuple(audio.shape)} do not match (b, 1, {self.num_frames}, "
                             f"{self.mel_bins}, {self.frame_columns})")
        pieces = rearrange(audio, "b 1 t f w -> b 1 f (t w)").flip(2)  # low frequencies at the top
        pieces = rearrange(pieces, "b 1 f (a k) -> (b a) 1 f k", a=self.audio_images)
        images = F.interpolate(pieces, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return rearrange(images.expand(-1, 3, -1, -1), "(b a) c h w -> b c a h w", a=self.audio_images)

    def images_to_audio(self, images: torch.Tensor) -> torch.Tensor:
        """Spectrogram images ``b 3 ta h w`` -> normalised audio frames ``b 1 t f w``."""
        gray = rearrange(images.mean(dim=1, keepdim=True), "b 1 a h w -> (b a) 1 h w")
        pieces = F.interpolate(gray, size=(self.mel_bins, self.piece_columns), mode="bilinear",
                               align_corners=False).flip(2)
        return rearrange(pieces, "(b a) 1 f (t w) -> b 1 (a t) f w", a=self.audio_images, w=self.frame_columns)

    def to_images(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``(video b 3 t h w, audio b 1 t f w)`` -> ``b 3 (t + ta) h w``: frames, then audio images."""
        return torch.cat([video, self.audio_to_images(audio)], dim=2)

    def from_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        video, audio = images.split([self.num_frames, self.audio_images], dim=2)
        return video.clamp(-1, 1), self.images_to_audio(audio)

    def audio_round_trip_error(self, audio: torch.Tensor) -> float:
        """Mean absolute error of audio frames -> images -> audio frames (the layout's own loss)."""
        return float((self.images_to_audio(self.audio_to_images(audio)) - audio).abs().mean())


class ImageLatents:
    """Clips <-> latents ``b z (t + ta) h' w'`` through a frozen image autoencoder."""

    def __init__(self, autoencoder: ImageAutoencoder, images: AVImages):
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.images = images
        self.data = images.data
        self.channels = autoencoder.latent_channels
        self.latent_size = autoencoder.latent_size(*images.size)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> "ImageLatents":
        """From a :mod:`recipes.av_dit.train_autoencoder` run folder (config.yaml and model/)."""
        from recipes.av_dit.train_autoencoder import AutoencoderRecipe
        from recipes.common.config import load_config

        run_dir = Path(run_dir)
        cfg = load_config(AutoencoderRecipe, run_dir / "config.yaml")
        return cls(ImageAutoencoder.from_pretrained(run_dir / "model"),
                   AVImages(AVData(cfg.data), audio_images=cfg.audio_images))

    @property
    def video_slice(self) -> slice:
        return slice(0, self.images.num_frames)

    @property
    def audio_slice(self) -> slice:
        return slice(self.images.num_frames, self.images.num_images)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.latents(self.images.to_images(video, audio))

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent -> ``(video b 3 t h w in [-1, 1], normalised audio frames b 1 t f w)``."""
        return self.images.from_images(self.autoencoder.images(latent))

    @torch.no_grad()
    def encode_dataset(self, dataset, *, batch_size: int = 32) -> dict[str, torch.Tensor]:
        """``{"latents": N z (t + ta) h' w', "labels": N}`` for every clip of ``dataset``."""
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        latents, labels = [], []
        for batch in loader:
            video, audio, label = self.data.model_inputs(batch)
            latents.append(self.encode(video, audio))
            labels.append(label)
        return {"latents": torch.cat(latents), "labels": torch.cat(labels)}
