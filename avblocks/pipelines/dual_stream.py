"""The dual-stream DiT's pipeline: joint, audio-to-video and video-to-audio from one model.

    from avblocks.pipelines import Pipeline
    pipe = Pipeline.from_pretrained("outputs/dual_stream_tiny/pipeline")
    pipe(labels=[0, 1]).save("clip.mp4")              # joint: both streams from noise
    pipe(audio="clicks.wav").save("a2v.mp4")          # your sound, generated pictures
    pipe(video="clip.mp4").save("v2a.mp4")            # your pictures, generated sound

The denoiser (:class:`~avblocks.dit.dual_stream.DualStreamDiT`) takes one flow time per
stream, so a stream the user gives is held clean (time 0, never moved) while the other is
generated. Both streams travel through the library's flow samplers packed into one tensor
(:class:`~avblocks.diffusion.stream_pack.StreamPack`); guidance is on the class label.

Choices:

- The codec is :class:`~avblocks.codecs.pixel_mel.PixelMelCodec` (no trained parts): the
  folder holds the denoiser (and a vocoder when one is used) and the spec.
- The given modality goes to the output as given (its frames resampled to the spec).
- ``step_cache`` takes :class:`~avblocks.dit.stream_cache.StreamCache`'s thresholds, e.g.
  ``{"video_threshold": 0.1, "audio_threshold": 0.1, "coupling_threshold": 0.05}``; the
  statistics of the last cached call are in ``DualStreamPipeline.last_cache``.
- Noise comes from a generator on the pipeline's device seeded with ``seed``.
"""

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from avblocks.audio.vocoder import Vocoder
from avblocks.codecs.pixel_mel import PixelMelCodec
from avblocks.diffusion import ClassifierFreeGuidance
from avblocks.diffusion.stream_pack import PackedDenoiser, StreamPack
from avblocks.dit.dual_stream import DualStreamDiT
from avblocks.dit.stream_cache import StreamCache
from avblocks.pipelines.base import Pipeline, audio_inverse, inverse_settings
from avblocks.pipelines.conditions import load_audio, load_video
from avblocks.pipelines.output import SoundingVideo
from avblocks.pipelines.proav_dit import SAMPLERS, FlowSampling, _batch, _labels
from avblocks.spec import AVSpec

__all__ = ["DualStreamPipeline"]


class DualStreamPipeline(Pipeline):
    """Joint, audio-to-video and video-to-audio generation with one dual-stream DiT (module doc).

    Args:
        codec: the pixel / mel codec of the clips' spec.
        denoiser: the trained :class:`DualStreamDiT` (its shapes must be the codec's).
        sampling: the defaults of :meth:`__call__`.
    """

    components = {"denoiser": DualStreamDiT, "vocoder": Vocoder}

    def __init__(self, codec: PixelMelCodec, denoiser: DualStreamDiT, *,
                 sampling: FlowSampling = FlowSampling()):  # noqa: B008 (frozen)
        if (denoiser.video_shape(), denoiser.audio_shape()) != (codec.video_shape, codec.audio_shape):
            raise ValueError(f"the denoiser takes video {denoiser.video_shape()} and audio {denoiser.audio_shape()}; "
                             f"the codec gives {codec.video_shape} and {codec.audio_shape}")
        if denoiser.fps != codec.spec.fps:
            raise ValueError(f"the denoiser's times are at {denoiser.fps} fps, the spec's at {codec.spec.fps}")
        self.codec, self.denoiser = codec, denoiser.eval()
        self.spec: AVSpec = codec.spec
        self.sampling = sampling
        self.pack = StreamPack(codec.video_shape, codec.audio_shape)
        self.last_cache: StreamCache | None = None

    # ------------------------------------------------------------ folder
    def modules(self) -> dict[str, nn.Module]:
        parts = {"denoiser": self.denoiser}
        if isinstance(self.codec.audio.inverse, Vocoder):
            parts["vocoder"] = self.codec.audio.inverse
        return parts

    def settings(self) -> dict[str, Any]:
        return {"sampling": asdict(self.sampling), "audio_inverse": inverse_settings(self.codec.audio.inverse)}

    @classmethod
    def from_parts(cls, spec: AVSpec, modules: dict[str, nn.Module], settings: dict[str, Any]) -> "DualStreamPipeline":
        codec = PixelMelCodec(spec, inverse=audio_inverse(spec, settings["audio_inverse"], modules))
        return cls(codec, modules["denoiser"], sampling=FlowSampling(**settings["sampling"]))

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_streams(self, labels: Tensor, *, video: Tensor | None = None, audio: Tensor | None = None,
                       steps: int, sampler: str, cfg_scale: float, seed: int,
                       step_cache: dict[str, float] | None = None, progress: bool = True) -> tuple[Tensor, Tensor]:
        """``(video b 3 t h w, audio frames b c t f w)`` for ``labels``; a given ``video`` or
        ``audio`` (model inputs) is held clean."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler ({sampler!r}) must be one of {sorted(SAMPLERS)}")
        device, b = self.device, len(labels)
        generator = torch.Generator(device=device).manual_seed(seed)
        noise = torch.randn(b, self.pack.size, generator=generator, device=device)
        clean = fixed = None
        if video is not None or audio is not None:
            given_v, given_a = self.pack.unpack(noise)
            fixed = self.pack.pack(given_v if video is None else video.to(device),
                                   given_a if audio is None else audio.to(device))
            clean = self.pack.clean_mask(b, video=video is not None, audio=audio is not None, device=device)
        model = PackedDenoiser(self.denoiser, self.pack)
        guided = ClassifierFreeGuidance(model, scale=cfg_scale, null_label=self.denoiser.null_label,
                                        frame_dim=StreamPack.frame_dim)
        solver = SAMPLERS[sampler](frame_dim=StreamPack.frame_dim)
        kwargs = dict(model_kwargs={"y": labels.to(device)}, clean_mask=clean, fixed=fixed, progress=progress)
        if step_cache is None:
            x = solver.sample(guided, noise, steps, **kwargs)
        else:
            with StreamCache(self.denoiser, **step_cache) as cache:
                x = solver.sample(guided, noise, steps, **kwargs)
            self.last_cache = cache
        return self.pack.unpack(x)

    @torch.no_grad()
    def __call__(self, labels=None, *, audio=None, video=None, num_clips: int | None = None,
                 steps: int | None = None, sampler: str | None = None, cfg_scale: float | None = None,
                 seed: int = 0, step_cache: dict[str, float] | None = None, start: float = 0.0,
                 progress: bool = True) -> SoundingVideo:
        """Generate clips: joint (neither ``audio`` nor ``video``), audio-to-video (``audio=`` a
        path or waveform, or a list of them) or video-to-audio (``video=``). Returns a
        :class:`SoundingVideo` (``.save("x.mp4")``, ``.preview("x.png")``)."""
        if audio is not None and video is not None:
            raise ValueError("give audio= (audio-to-video) or video= (video-to-audio), not both")
        s, spec, null = self.sampling, self.spec, self.denoiser.null_label
        options = dict(steps=steps or s.steps, sampler=sampler or s.sampler,
                       cfg_scale=s.cfg_scale if cfg_scale is None else cfg_scale, seed=seed,
                       step_cache=step_cache, progress=progress)
        given_video = given_wave = None
        if audio is None and video is None:
            if num_clips is not None and labels is not None:
                raise ValueError("give labels or num_clips, not both")
            y = _labels(labels, num_clips, null, self.denoiser.num_classes)
            out_video, frames = self.sample_streams(y, **options)
        elif audio is not None:
            given_wave = _batch(audio, lambda a: load_audio(a, spec, num_frames=spec.num_frames, start=start))
            grey = torch.zeros(len(given_wave), *self.codec.video_shape)
            _, given_frames = self.codec.encode(grey, given_wave)
            y = _labels(labels, len(given_wave), null, self.denoiser.num_classes)
            out_video, frames = self.sample_streams(y, audio=given_frames, **options)
        else:
            given_video = _batch(video, lambda v: load_video(v, spec, start=start))
            y = _labels(labels, len(given_video), null, self.denoiser.num_classes)
            out_video, frames = self.sample_streams(y, video=given_video, **options)
        out_video, out_audio = self.codec.decode(out_video.float(), frames.float())
        if given_wave is not None:  # the given modality goes out as given
            out_audio = given_wave.squeeze(1) if spec.channels == 1 else given_wave
        if given_video is not None:
            out_video = given_video
        return SoundingVideo(out_video.cpu(), out_audio.cpu(), spec, None if labels is None else y)
