"""ProAV-DiT's pipeline: the tri-plane codec and the ST-DiT denoiser, sampled in three lines.

    from avblocks.pipelines import ProAVDiTPipeline
    pipe = ProAVDiTPipeline.from_pretrained("outputs/demo/pipeline")
    pipe(labels=[0, 1]).save("clip.mp4")                    # joint: video and sound from noise

    pipe(audio="speech.wav").save("a2v.mp4")                # audio-to-video: your sound, new pictures
    pipe(video="clip.mp4").save("v2a.mp4")                  # video-to-audio: your pictures, new sound

One trained model does all three: ST-DiT takes a time per plane, so a modality given by the
user is encoded and held clean (time 0, never updated) while the other is generated
(ProAV-DiT's per-plane timesteps). Sampling integrates the rectified-flow ODE (Heun or Euler)
under classifier-free guidance on the class label.

Choices:

- **Labels.** ``labels`` (an int, a list or a tensor of classes) sets the class of each clip;
  ``None`` samples without a class (the null label of classifier-free guidance; needs a
  model trained with label dropout). In a2v / v2a the batch follows the given media.
- **The given modality's latent.** The MDSA fuses audio and video while encoding, so encoding
  one modality needs a stand-in for the other: mid-grey frames for a2v, silence for v2a. Only
  the given modality's planes are kept; since the MDSA decodes each modality from its own
  planes, the output's given modality is exactly the codec round trip of what was given.
- **Defaults** (steps, sampler, guidance) come from the folder's settings, where the recipe
  that saved it wrote what its benchmarks found best (16 Heun steps, no guidance for the demo:
  ``benchmarks/README.md``, "ProAV-DiT demo").
- ``step_cache`` (``"first_block"`` or ``"teacache"``, with ``cache_threshold``) skips most of
  the block stack on steps where it would change little (:mod:`avblocks.dit.cache`). A
  folder may record one as its default (``FlowSampling.step_cache``); ``step_cache=False``
  switches it off for a call.
- **The plane layout** is the codec's (``settings["layout"]``: ``"canvas"`` with an
  :class:`~avblocks.dit.STDiT`, ``"packed"`` with a :class:`~avblocks.dit.PackedSTDiT`);
  folders saved before the packed layout existed have no ``layout`` and are canvas folders.
- Noise comes from a ``torch.Generator`` on the pipeline's device seeded with ``seed``
  (:func:`avblocks.device.seeded_generator`): the same call on the same device gives the
  same clips (a GPU's stream differs from the CPU's).
"""

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from avblocks.codecs.tri_plane import TriPlaneCodec
from avblocks.device import seeded_generator
from avblocks.diffusion import ClassifierFreeGuidance, FlowEulerSampler, FlowHeunSampler
from avblocks.dit.cache import FirstBlockCache, TeaCache
from avblocks.dit.packed_stdit import PackedSTDiT
from avblocks.dit.stdit import STDiT
from avblocks.latent.mdsa import MDSA
from avblocks.latent.planes import AUDIO_PLANES, VIDEO_PLANES
from avblocks.pipelines.base import (
    VOCODER_CLASSES,
    InWeightsDtype,
    Pipeline,
    audio_inverse,
    inverse_parts,
    inverse_settings,
)
from avblocks.pipelines.conditions import load_audio, load_video
from avblocks.pipelines.output import SoundingVideo
from avblocks.spec import AVSpec

__all__ = ["ProAVDiTPipeline", "FlowSampling", "STEP_CACHES"]

SAMPLERS = {"heun": FlowHeunSampler, "euler": FlowEulerSampler}
STEP_CACHES = {"first_block": FirstBlockCache, "teacache": TeaCache}
"""The step caches a call may ask for by name (``cache=...``)."""


@dataclass(frozen=True)
class FlowSampling:
    """Sampling defaults a pipeline folder records."""

    steps: int = 16
    sampler: Literal["heun", "euler"] = "heun"
    cfg_scale: float = 1.0
    step_cache: Literal["first_block", "teacache"] | None = None  # default step cache (None: none)
    cache_threshold: float = 0.1


def _labels(labels, batch: int | None, null: int, num_classes: int) -> Tensor:
    if labels is None:
        return torch.full((batch or 1,), null, dtype=torch.long)
    out = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if batch is not None and len(out) == 1:
        out = out.expand(batch).clone()
    if batch is not None and len(out) != batch:
        raise ValueError(f"{len(out)} labels for {batch} given clips")
    bad = [int(v) for v in out if not 0 <= int(v) < num_classes]
    if bad:
        raise ValueError(f"labels {bad} out of range: the model knows classes 0..{num_classes - 1}")
    return out


def _batch(sources, load) -> Tensor:
    items = sources if isinstance(sources, (list, tuple)) else [sources]
    return torch.cat([load(s) for s in items])


class ProAVDiTPipeline(Pipeline):
    """Joint, audio-to-video and video-to-audio generation with one ST-DiT (module doc).

    Args:
        codec: the tri-plane codec (MDSA, plane layout, audio inverse).
        denoiser: the trained ST-DiT (its canvas and patch must fit the codec's).
        sampling: the defaults of :meth:`__call__`.
    """

    components = {"autoencoder": MDSA, "denoiser": (STDiT, PackedSTDiT), **VOCODER_CLASSES}

    def __init__(self, codec: TriPlaneCodec, denoiser: STDiT | PackedSTDiT, *,
                 sampling: FlowSampling = FlowSampling()):
        if codec.layout_name == "packed":
            if not isinstance(denoiser, PackedSTDiT):
                raise ValueError(f"a packed codec needs a PackedSTDiT denoiser, got {type(denoiser).__name__}")
            expected, got = (codec.channels, codec.plane_shapes), (denoiser.in_channels, denoiser.planes)
            if got != expected:
                raise ValueError(f"the denoiser takes (channels, planes) = {got}; the codec gives {expected}")
        else:
            if not isinstance(denoiser, STDiT):
                raise ValueError(f"a canvas codec needs an STDiT denoiser, got {type(denoiser).__name__}")
            expected = (codec.channels, codec.num_planes, codec.side)
            got = (denoiser.in_channels, denoiser.frames, denoiser.side)
            if got != expected:
                raise ValueError(f"the denoiser takes (channels, planes, side) = {got}; the codec gives {expected}")
        if tuple(denoiser.patch_size) != tuple(codec.patch):
            raise ValueError(f"the denoiser's patch {denoiser.patch_size} differs from the codec's layout "
                             f"patch {codec.patch}")
        self.codec, self.denoiser = codec, denoiser.eval()
        self.spec: AVSpec = codec.spec
        self.sampling = sampling

    # ------------------------------------------------------------ folder
    def modules(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.codec.autoencoder, "denoiser": self.denoiser} | inverse_parts(self.codec.audio.inverse)

    def settings(self) -> dict[str, Any]:
        return {"layout": self.codec.layout_name, "patch": list(self.codec.patch), "sampling": asdict(self.sampling),
                "audio_inverse": inverse_settings(self.codec.audio.inverse)}

    @classmethod
    def from_parts(cls, spec: AVSpec, modules: dict[str, nn.Module], settings: dict[str, Any]) -> "ProAVDiTPipeline":
        inverse = audio_inverse(spec, settings["audio_inverse"], modules)
        codec = TriPlaneCodec(spec, modules["autoencoder"], patch=tuple(settings["patch"]),
                              layout=settings.get("layout", "canvas"), inverse=inverse)
        return cls(codec, modules["denoiser"], sampling=FlowSampling(**settings["sampling"]))

    @property
    def num_classes(self) -> int:
        return self.denoiser.y_embedder.num_classes

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_latents(self, labels: Tensor, *, condition: Tensor | None = None,
                       clean: Tensor | None = None, steps: int, sampler: str, cfg_scale: float,
                       seed: int, step_cache: str | None = None, cache_threshold: float = 0.1,
                       progress: bool = True) -> Tensor:
        """Latents in the codec's layout for ``labels``; ``clean`` (``b 6`` bool, PLANE_ORDER)
        holds the planes of ``condition`` clean. Padded canvas cells start and stay at 0."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler ({sampler!r}) must be one of {sorted(SAMPLERS)}")
        if step_cache is not None and step_cache not in STEP_CACHES:
            raise ValueError(f"step_cache ({step_cache!r}) must be None or one of {sorted(STEP_CACHES)}")
        device = self.device
        generator = seeded_generator(device, seed)
        valid = self.codec.valid_mask.to(device)[None, None].float()
        noise = torch.randn(self.codec.latent_shape(len(labels)), generator=generator, device=device) * valid
        guided = ClassifierFreeGuidance(InWeightsDtype(self.denoiser), scale=cfg_scale,
                                        null_label=self.denoiser.null_label)
        kwargs = dict(model_kwargs={"y": labels.to(device)}, progress=progress,
                      clean_mask=None if clean is None else self.codec.frame_values(clean.to(device)),
                      fixed=None if condition is None else condition.to(device))
        solver = SAMPLERS[sampler]()
        if step_cache is None:
            x = solver.sample(guided, noise, steps, **kwargs)
        else:
            with STEP_CACHES[step_cache](self.denoiser, threshold=cache_threshold):
                x = solver.sample(guided, noise, steps, **kwargs)
        return x * valid

    @torch.no_grad()
    def __call__(self, labels=None, *, audio=None, video=None, num_clips: int | None = None,
                 steps: int | None = None, sampler: str | None = None, cfg_scale: float | None = None,
                 seed: int = 0, step_cache: "str | bool | None" = None, cache_threshold: float | None = None,
                 start: float = 0.0, progress: bool = True) -> SoundingVideo:
        """Generate clips: joint (neither ``audio`` nor ``video``), audio-to-video (``audio=`` a
        path or waveform, or a list of them) or video-to-audio (``video=``). ``num_clips`` is the
        batch when ``labels`` is None in joint mode; ``start`` (seconds) is where given media
        is read from; ``step_cache`` None takes the folder's default, False none. Returns a
        :class:`SoundingVideo` (``.save("x.mp4")``, ``.preview("x.png")``)."""
        if audio is not None and video is not None:
            raise ValueError("give audio= (audio-to-video) or video= (video-to-audio), not both")
        s = self.sampling
        cache = s.step_cache if step_cache is None else (step_cache or None)
        options = dict(steps=steps or s.steps, sampler=sampler or s.sampler,
                       cfg_scale=s.cfg_scale if cfg_scale is None else cfg_scale, seed=seed, step_cache=cache,
                       cache_threshold=s.cache_threshold if cache_threshold is None else cache_threshold,
                       progress=progress)
        spec, null = self.spec, self.denoiser.null_label
        if audio is None and video is None:
            if num_clips is not None and labels is not None:
                raise ValueError("give labels or num_clips, not both")
            y = _labels(labels, num_clips, null, self.num_classes)
            latent = self.sample_latents(y, **options)
            out_video, out_audio = self.codec.decode(latent)
            return SoundingVideo(out_video.cpu(), out_audio.cpu(), spec, None if labels is None else y)
        planes = self.codec.num_planes
        if audio is not None:
            wave = _batch(audio, lambda a: load_audio(a, spec, num_frames=spec.num_frames, start=start))
            grey = torch.zeros(len(wave), 3, spec.num_frames, *spec.size)
            condition = self.codec.encode(grey.to(self.device), wave.to(self.device))
            held = AUDIO_PLANES
        else:
            frames = _batch(video, lambda v: load_video(v, spec, start=start))
            silence = torch.zeros(len(frames), spec.channels, spec.num_samples)
            condition = self.codec.encode(frames.to(self.device), silence.to(self.device))
            held = VIDEO_PLANES
        clean = torch.zeros(len(condition), planes, dtype=torch.bool)
        clean[:, held] = True
        y = _labels(labels, len(condition), null, self.num_classes)
        latent = self.sample_latents(y, condition=condition, clean=clean, **options)
        out_video, out_audio = self.codec.decode(latent)
        # the given modality goes to the output as given, not as its codec round trip
        if audio is not None:
            out_audio = wave.squeeze(1) if spec.channels == 1 else wave
        else:
            out_video = frames
        return SoundingVideo(out_video.cpu(), out_audio.cpu(), spec, None if labels is None else y)
