"""READ's pipeline: speech (or any sound) and a reference picture in, a video of any length out.

    from avblocks.pipelines import ReadPipeline
    pipe = ReadPipeline.from_pretrained("outputs/read_a2v_tiny/pipeline")
    pipe(audio="speech.wav", reference="face.png").save("talking.mp4")
    pipe.stream(audio="speech.wav", reference="face.png", path="long.mp4")   # frame by frame

The audio (any file with sound, any sample rate and channel count; or a waveform tensor at the
spec's rate) becomes one causal code per video frame (:class:`~avblocks.codecs.FrameCodeCodec`);
the video is generated clip by clip with one frame carried over
(:func:`avblocks.diffusion.long_generation.iter_long_generation`), as long as the audio
(every whole frame of it) or ``frames`` long. The reference picture is scaled to cover the
spec's frame size and centre-cropped; it is the identity every clip is anchored to (held
clean in every clip) and the start of the first one: video frame 0 is generated from it,
re-noised one level below the others, so it is close to the picture but not a copy of it.

:meth:`ReadPipeline.__call__` returns the whole clip (:class:`SoundingVideo`, with the given
sound); :meth:`ReadPipeline.stream` encodes frames to an mp4 as they are made, holding only
the reference and the carried frame, so its memory does not grow with the length.
"""

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from avblocks.audio.frame_codes import FrameAudioCodec
from avblocks.codecs.frame_codes import FrameCodeCodec
from avblocks.data.mp4 import Mp4Writer
from avblocks.diffusion.long_generation import iter_long_generation
from avblocks.diffusion.schedules import ReadSchedule
from avblocks.dit.read_denoiser import ReadDenoiser
from avblocks.pipelines.base import InWeightsDtype, Pipeline
from avblocks.pipelines.conditions import load_audio, load_reference
from avblocks.pipelines.output import SoundingVideo
from avblocks.spec import AVSpec

__all__ = ["ReadPipeline", "ReadSampling"]


@dataclass(frozen=True)
class ReadSampling:
    """Sampling defaults and the asynchronous schedule a READ pipeline folder records."""

    steps: int = 10
    guidance: float = 1.0
    lag: int = 1
    shift: float = 1.0


class ReadPipeline(Pipeline):
    """Audio-driven video from a reference picture, any length (module doc)."""

    components = {"audio_codec": FrameAudioCodec, "denoiser": ReadDenoiser}

    def __init__(self, codec: FrameCodeCodec, denoiser: ReadDenoiser, *, sampling: ReadSampling = ReadSampling()):
        if denoiser.size != codec.spec.size[0] or codec.spec.size[0] != codec.spec.size[1]:
            raise ValueError(f"the denoiser makes {denoiser.size} x {denoiser.size} frames; the spec has "
                             f"{codec.spec.size}")
        if codec.code_dim != denoiser.config.audio_dim:
            raise ValueError(f"the audio codes are {codec.code_dim} wide; the denoiser takes "
                             f"{denoiser.config.audio_dim}")
        self.codec, self.denoiser = codec, denoiser.eval()
        self.spec: AVSpec = codec.spec
        self.sampling = sampling

    def schedule(self, steps: int | None = None) -> ReadSchedule:
        s = self.sampling
        return ReadSchedule(frames=self.denoiser.frames, motion_frames=1, lag=s.lag,
                            steps=steps or s.steps, shift=s.shift)

    # ------------------------------------------------------------ folder
    def modules(self) -> dict[str, nn.Module]:
        return {"audio_codec": self.codec.audio_codec, "denoiser": self.denoiser}

    def settings(self) -> dict[str, Any]:
        return {"sampling": asdict(self.sampling)}

    @classmethod
    def from_parts(cls, spec: AVSpec, modules: dict[str, nn.Module], settings: dict[str, Any]) -> "ReadPipeline":
        return cls(FrameCodeCodec(spec, modules["audio_codec"]), modules["denoiser"],
                   sampling=ReadSampling(**settings["sampling"]))

    # ------------------------------------------------------------ sampling
    def _inputs(self, audio, reference, frames: int | None, start: float) -> tuple[Tensor, Tensor, Tensor]:
        wave = load_audio(audio, self.spec, num_frames=frames, start=start)
        if len(wave) != 1:
            raise ValueError(f"READ generates one video per call; got {len(wave)} waveforms")
        image = load_reference(reference, self.spec)
        if len(image) != 1:
            raise ValueError(f"READ takes one reference picture per call; got {len(image)}")
        codes = self.codec.codes(wave.to(self.device))
        return wave, image.to(self.device), codes

    def frames(self, audio, reference, *, frames: int | None = None, steps: int | None = None,
               guidance: float | None = None, seed: int = 0, carry: bool = True, start: float = 0.0):
        """``(waveform 1 ch n, iterator of new frames 1 3 k h w)``: the generation, clip by clip."""
        wave, image, codes = self._inputs(audio, reference, frames, start)
        s = self.sampling
        steps = steps or s.steps
        clips = iter_long_generation(InWeightsDtype(self.denoiser), codes, image, schedule=self.schedule(steps), steps=steps,
                                     seed=seed, guidance=s.guidance if guidance is None else guidance,
                                     carry=carry)
        return wave, clips

    @torch.no_grad()
    def __call__(self, audio, reference, *, frames: int | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, carry: bool = True,
                 start: float = 0.0) -> SoundingVideo:
        """The whole clip: ``frames`` frames (default: every whole frame of the audio)."""
        wave, clips = self.frames(audio, reference, frames=frames, steps=steps, guidance=guidance, seed=seed,
                                  carry=carry, start=start)
        video = torch.cat([new.cpu() for new in clips], dim=2)
        n = video.shape[2] * self.spec.samples_per_frame
        audio_out = wave[:, 0, :n] if self.spec.channels == 1 else wave[..., :n]
        return SoundingVideo(video.clamp(-1, 1), audio_out.cpu(), self.spec.with_frames(video.shape[2]))

    @torch.no_grad()
    def stream(self, audio, reference, path: "str | os.PathLike[str]", *, frames: int | None = None,
               steps: int | None = None, guidance: float | None = None, seed: int = 0,
               carry: bool = True, start: float = 0.0) -> Path:
        """Write the generation to an mp4 as it is made (H.264 + AAC, atomic on completion)."""
        wave, clips = self.frames(audio, reference, frames=frames, steps=steps, guidance=guidance, seed=seed,
                                  carry=carry, start=start)
        # zerolatency: no encoder lookahead, so frames leave the encoder as they come and its
        # buffers hold no window of frames (about 4 MiB less on the synthetic set's frames)
        with Mp4Writer(path, fps=self.spec.fps, sample_rate=self.spec.sample_rate, audio=wave[0],
                       tune="zerolatency") as writer:
            for new in clips:
                writer.write(new[0])
        return Path(path)
