"""AV-DiT's pipeline: the per-image latent codec and the adapted frozen image DiT.

    from avblocks.pipelines import AVDiTPipeline
    pipe = AVDiTPipeline.from_pretrained("outputs/av_dit/pipeline")
    pipe(labels=[0, 1]).save("clip.mp4")

Joint generation only (AV-DiT has no per-modality times): video frames and spectrogram images
start from one noise tensor and share every step. The model is a DDPM epsilon model (the
frozen DiT's objective), so sampling is deterministic DDIM (``eta = 0``, trailing spacing) or
DPM-Solver++(2M), under classifier-free guidance with the DiT's null label (both modalities
guided together). The latents are decoded image by image, the spectrogram images turned back
into video-like audio and a waveform (:class:`~avblocks.codecs.ImageLatentCodec`).
"""

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from avblocks.codecs.image_latent import ImageLatentCodec
from avblocks.device import seeded_generator
from avblocks.diffusion import ClassifierFreeGuidance
from avblocks.diffusion.ddpm import DDPM
from avblocks.diffusion.samplers import DDIMSampler, DPMSolverPP2MSampler
from avblocks.dit.av_dit import AVDiT
from avblocks.latent.image_autoencoder import ImageAutoencoder
from avblocks.pipelines.base import (
    VOCODER_CLASSES,
    InWeightsDtype,
    Pipeline,
    audio_inverse,
    inverse_parts,
    inverse_settings,
)
from avblocks.pipelines.output import SoundingVideo
from avblocks.spec import AVSpec

__all__ = ["AVDiTPipeline", "DDPMSampling"]

SAMPLERS = {"ddim": DDIMSampler, "dpm": DPMSolverPP2MSampler}


@dataclass(frozen=True)
class DDPMSampling:
    """The noise schedule the model was trained on, and the sampling defaults."""

    schedule: Literal["linear", "cosine"] = "linear"
    num_timesteps: int = 1000
    steps: int = 25
    sampler: Literal["ddim", "dpm"] = "ddim"
    cfg_scale: float = 2.0


class AVDiTPipeline(Pipeline):
    """Joint sounding-video generation with a frozen image DiT and its adapters (module doc)."""

    components = {"autoencoder": ImageAutoencoder, "denoiser": AVDiT, **VOCODER_CLASSES}

    def __init__(self, codec: ImageLatentCodec, denoiser: AVDiT, *, sampling: DDPMSampling = DDPMSampling()):
        if (denoiser.video_frames, denoiser.audio_images) != (codec.num_frames, codec.audio_images):
            raise ValueError(f"the denoiser takes {denoiser.video_frames} frames + {denoiser.audio_images} audio "
                             f"images; the codec gives {codec.num_frames} + {codec.audio_images}")
        self.codec, self.denoiser = codec, denoiser.eval()
        self.spec: AVSpec = codec.spec
        self.sampling = sampling
        self.ddpm = DDPM(schedule=sampling.schedule, num_timesteps=sampling.num_timesteps, prediction="epsilon")

    def modules(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.codec.autoencoder, "denoiser": self.denoiser} | inverse_parts(self.codec.audio.inverse)

    def settings(self) -> dict[str, Any]:
        return {"audio_images": self.codec.audio_images, "sampling": asdict(self.sampling),
                "audio_inverse": inverse_settings(self.codec.audio.inverse)}

    @classmethod
    def from_parts(cls, spec: AVSpec, modules: dict[str, nn.Module], settings: dict[str, Any]) -> "AVDiTPipeline":
        inverse = audio_inverse(spec, settings["audio_inverse"], modules)
        codec = ImageLatentCodec(spec, modules["autoencoder"], audio_images=settings["audio_images"], inverse=inverse)
        return cls(codec, modules["denoiser"], sampling=DDPMSampling(**settings["sampling"]))

    @torch.no_grad()
    def sample_latents(self, labels: torch.Tensor, *, steps: int, sampler: str, cfg_scale: float, seed: int,
                       progress: bool = True) -> torch.Tensor:
        """Latents ``b z (t + ta) h w`` for clip classes ``labels``."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler ({sampler!r}) must be one of {sorted(SAMPLERS)}")
        device = self.device
        h, w = self.codec.latent_size
        generator = seeded_generator(device, seed)
        noise = torch.randn(len(labels), self.codec.channels, self.codec.num_images, h, w, generator=generator,
                            device=device)
        guided = ClassifierFreeGuidance(InWeightsDtype(self.denoiser), scale=cfg_scale,
                                        null_label=self.denoiser.null_label)
        return SAMPLERS[sampler](self.ddpm).sample(guided, noise, steps, model_kwargs={"y": labels.to(device)},
                                                   progress=progress)

    @torch.no_grad()
    def __call__(self, labels=None, *, num_clips: int | None = None, steps: int | None = None,
                 sampler: str | None = None, cfg_scale: float | None = None, seed: int = 0,
                 progress: bool = True) -> SoundingVideo:
        """``labels`` (classes; ``None``: ``num_clips`` unconditional clips) -> a :class:`SoundingVideo`."""
        if labels is not None and num_clips is not None:
            raise ValueError("give labels or num_clips, not both")
        classes = self.denoiser.num_clip_classes
        if labels is None:
            y = torch.full((num_clips or 1,), self.denoiser.null_label, dtype=torch.long)
        else:
            y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            bad = [int(v) for v in y if not 0 <= int(v) < classes]
            if bad:
                raise ValueError(f"labels {bad} out of range: the model knows classes 0..{classes - 1}")
        s = self.sampling
        latent = self.sample_latents(y, steps=steps or s.steps, sampler=sampler or s.sampler,
                                     cfg_scale=s.cfg_scale if cfg_scale is None else cfg_scale, seed=seed,
                                     progress=progress)
        video, audio = self.codec.decode(latent)
        return SoundingVideo(video.cpu(), audio.cpu(), self.spec, None if labels is None else y)
