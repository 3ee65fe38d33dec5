"""AV-DiT's codec: a clip <-> the latents of ``t`` video frames and ``ta`` spectrogram images.

AV-DiT runs one *image* model (autoencoder and DiT) on both modalities, so the audio must
become images of the video frames' size. The layout (the paper turns a clip's spectrogram into
one image; this keeps more time resolution):

- Audio is the normalised log-mel of the clip (:class:`~avblocks.codecs.audio_frames.AudioFrames`:
  ``f`` mel bins, ``w`` columns per video frame), concatenated to one spectrogram
  ``f x (t w)`` (exactly the clip's spectrogram).
- It is cut along time into ``ta`` equal pieces (``audio_images``, which must divide the
  number of frames ``t``): audio image ``j`` holds the sound of video frames
  ``[j t/ta, (j+1) t/ta)``, so a fusion block can line audio images up with frame groups.
- Each piece (``f x (t w / ta)``, e.g. 64 x 40 for 16 frames at 8 fps, hop 200, ``ta = 4``) is
  resized to the frame size ``h x w`` (bilinear, anti-aliased), with low frequencies in the
  top row, and repeated over the 3 colour channels (one codec for both modalities, as AV-DiT
  shares SD's VAE). Back: mean of the channels, bilinear resize to ``f x (t w / ta)``,
  reshape to video-like frames ``b 1 t f w``.
- The resize costs frequency resolution (64 mel bins -> 32 rows) and a little time resolution
  (40 columns -> 32); one image per clip (the paper's layout) would squeeze 160 columns into
  32, 4 pixels per video frame, too coarse for frame-accurate onsets.
  :meth:`ImageLatentCodec.audio_round_trip_error` measures what the layout itself loses.

The frozen :class:`~avblocks.latent.ImageAutoencoder` then turns the images into one latent
``b z (t + ta) h' w'`` (video frames first, then audio images): the one tensor the samplers
move (per-frame timesteps along axis 2 apply per image).
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from avblocks.codecs.audio_frames import AudioFrames
from avblocks.latent.image_autoencoder import ImageAutoencoder
from avblocks.spec import AVSpec
from avblocks.typing import Float, Tensor, shapecheck

__all__ = ["ImageLatentCodec"]


class ImageLatentCodec(nn.Module):
    """Clips <-> images ``b 3 (t + ta) h w`` <-> latents ``b z (t + ta) h' w'`` (module doc).

    Args:
        spec: the clips' description (mono audio).
        autoencoder: the per-frame image autoencoder; ``None`` gives the image layout alone
            (what training the autoencoder needs).
        audio_images: ``ta``, spectrogram images per clip (divides ``spec.num_frames``).
        inverse: the audio inverse (default Griffin-Lim), see :class:`AudioFrames`.
    """

    def __init__(self, spec: AVSpec, autoencoder: ImageAutoencoder | None = None, *, audio_images: int = 4,
                 inverse: nn.Module | None = None):
        super().__init__()
        if audio_images < 1 or spec.num_frames % audio_images:
            raise ValueError(f"audio_images ({audio_images}) must divide the clip's {spec.num_frames} frames")
        if spec.channels != 1:
            raise ValueError(f"the image layout takes mono audio; the spec has {spec.channels} channels")
        self.spec = spec
        self.audio = AudioFrames(spec, inverse)
        self.num_frames, self.audio_images = spec.num_frames, audio_images
        self.mel_bins, self.frame_columns = spec.mel.n_mels, spec.frame_columns
        self.piece_columns = spec.num_frames * self.frame_columns // audio_images
        self.autoencoder = None if autoencoder is None else autoencoder.eval().requires_grad_(False)

    @property
    def num_images(self) -> int:
        return self.num_frames + self.audio_images

    @property
    def video_slice(self) -> slice:
        return slice(0, self.num_frames)

    @property
    def audio_slice(self) -> slice:
        return slice(self.num_frames, self.num_images)

    @property
    def channels(self) -> int:
        return self._autoencoder().latent_channels

    @property
    def latent_size(self) -> tuple[int, int]:
        return self._autoencoder().latent_size(*self.spec.size)

    def _autoencoder(self) -> ImageAutoencoder:
        if self.autoencoder is None:
            raise ValueError("this ImageLatentCodec has no autoencoder (built for the image layout only)")
        return self.autoencoder

    # ------------------------------------------------------------ image layout
    @shapecheck
    def audio_to_images(self, frames: Float[Tensor, "b 1 t f w"]) -> Float[Tensor, "b 3 a h ww"]:
        """Normalised audio frames -> spectrogram images ``b 3 ta h w``."""
        if frames.shape[1:] != (1, self.num_frames, self.mel_bins, self.frame_columns):
            raise ValueError(f"audio frames {tuple(frames.shape)} do not match (b, 1, {self.num_frames}, "
                             f"{self.mel_bins}, {self.frame_columns})")
        pieces = rearrange(frames, "b 1 t f w -> b 1 f (t w)").flip(2)  # low frequencies at the top
        pieces = rearrange(pieces, "b 1 f (a k) -> (b a) 1 f k", a=self.audio_images)
        images = F.interpolate(pieces, size=self.spec.size, mode="bilinear", antialias=True, align_corners=False)
        return rearrange(images.expand(-1, 3, -1, -1), "(b a) c h w -> b c a h w", a=self.audio_images)

    @shapecheck
    def images_to_audio(self, images: Float[Tensor, "b 3 a h ww"]) -> Float[Tensor, "b 1 t f w"]:
        """Spectrogram images ``b 3 ta h w`` -> normalised audio frames ``b 1 t f w``."""
        gray = rearrange(images.mean(dim=1, keepdim=True), "b 1 a h w -> (b a) 1 h w")
        pieces = F.interpolate(gray, size=(self.mel_bins, self.piece_columns), mode="bilinear",
                               align_corners=False).flip(2)
        return rearrange(pieces, "(b a) 1 f (t w) -> b 1 (a t) f w", a=self.audio_images, w=self.frame_columns)

    def to_images(self, video: Tensor, frames: Tensor) -> Tensor:
        """``(video b 3 t h w, audio frames b 1 t f w)`` -> ``b 3 (t + ta) h w``: frames, then audio images."""
        return torch.cat([video, self.audio_to_images(frames)], dim=2)

    def from_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``b 3 (t + ta) h w`` -> ``(video in [-1, 1], normalised audio frames)``."""
        video, audio = images.split([self.num_frames, self.audio_images], dim=2)
        return video.clamp(-1, 1), self.images_to_audio(audio)

    def audio_round_trip_error(self, frames: Tensor) -> float:
        """Mean absolute error of audio frames -> images -> audio frames (the layout's own loss)."""
        return float((self.images_to_audio(self.audio_to_images(frames)) - frames).abs().mean())

    # ------------------------------------------------------------ latents
    @torch.no_grad()
    def encode_frames(self, video: Tensor, frames: Tensor) -> Tensor:
        return self._autoencoder().latents(self.to_images(video, frames))

    def encode(self, video: Tensor, waveform: Tensor) -> Tensor:
        """``(video b 3 t h w, waveform b n)`` -> latent ``b z (t + ta) h' w'``."""
        return self.encode_frames(video, self.audio.encode(waveform))

    @torch.no_grad()
    def decode_frames(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Latent -> ``(video b 3 t h w in [-1, 1], normalised audio frames b 1 t f w)``."""
        return self.from_images(self._autoencoder().images(latent))

    def decode(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Latent -> ``(video b 3 t h w in [-1, 1], waveform b n)``."""
        video, frames = self.decode_frames(latent)
        return video, self.audio.decode(frames)
