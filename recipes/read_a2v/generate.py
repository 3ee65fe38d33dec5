"""Long audio-driven generation: clip after clip, one frame carried over, streamed to an mp4.

    python -m recipes.read_a2v.generate RUN_DIR --frames 64 --out long.mp4 [--seed 0] [--steps 10]

Given a reference frame and an audio track of any length (here: a held-out synthetic clip's
first frame and its soundtrack, ``--frames`` long), the video is made clip by clip
(:func:`iter_long_generation`). A clip is ``[reference, motion_1 .. motion_m]``:

- the reference frame is held clean in every clip (the identity anchor; the sampler keeps it
  bit-identical);
- the first motion frame is the *carried* frame: the last frame of the previous clip,
  re-noised to level ``g[lag]`` (one level below the others, which start from pure noise)
  and denoised on :class:`~avblocks.diffusion.schedules.ReadSchedule`'s asynchronous grid.
  For the first clip the carried frame is the reference itself (video frame 0 *is* the
  reference here), so every clip starts the same way;
- clip ``0`` contributes its ``m`` motion frames (video frames ``0 .. m-1``), every later clip
  its ``m - 1`` new frames (its first motion frame overlaps the previous clip's last frame,
  which was already written and is kept), so ``L`` frames need
  ``1 + ceil((L - m) / (m - 1))`` clips; the last clip's audio past the end is padded with
  the last code and its extra frames are dropped;
- audio codes come from the causal codec over the whole track once (a code never depends on
  later audio, so this equals encoding it as it streams);
- noise comes from one ``torch.Generator`` seeded with ``seed``: a run is deterministic;
- optional audio classifier-free guidance (:class:`AudioGuidance`, ``schedule.guidance``).

Memory: the generator yields each clip's new frames and keeps only the reference and the
carried frame, so the video is never held; :class:`Mp4Stream` encodes frames (and the
matching audio samples) as they arrive. What still grows with the length is the input
itself: the waveform, its mel frames and the codes (about 11 KB per frame at 16 kHz / 8 fps
with 64 mel bins), see ``benchmarks/read_long_generation.py``.
"""

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from avblocks.audio.frame_codes import FrameAudioCodec
from avblocks.diffusion import FlowEulerSampler, FlowMatching
from avblocks.diffusion.schedules import ReadSchedule
from avblocks.dit.read_denoiser import ReadDenoiser
from recipes.common.config import load_config
from recipes.proav_dit.data import AVData

__all__ = ["AudioGuidance", "Mp4Stream", "iter_long_generation", "num_clips", "load_run", "main"]


def num_clips(frames: int, motion: int) -> int:
    """Clips needed for ``frames`` video frames with ``motion`` motion frames per clip."""
    if motion < 2 or frames < 1:
        raise ValueError(f"need motion ({motion}) >= 2 and frames ({frames}) >= 1")
    return 1 + max(0, -(-(frames - motion) // (motion - 1)))


@torch.no_grad()
def iter_long_generation(
    model: ReadDenoiser,
    codes: torch.Tensor,
    reference: torch.Tensor,
    *,
    schedule: ReadSchedule,
    steps: int,
    seed: int = 0,
    guidance: float = 1.0,
    carry: bool = True,
    sampler=None,
) -> Iterator[torch.Tensor]:
    """Yield the new frames of each clip, ``b c k h w`` (see the module doc).

    Args:
        model: the denoiser (``model.frames = 1 + m``).
        codes: audio codes ``b L d``, one per video frame to generate.
        reference: the reference frame ``b c h w`` (also video frame 0's content).
        schedule: a :class:`ReadSchedule` with ``frames = model.frames``, ``motion_frames=1``.
        steps: sampling steps per clip.
        seed: seed of the noise generator.
        guidance: audio classifier-free guidance scale (1: the conditional model only).
        carry: ``False`` is the ablation without READ's overlap: the first motion frame
            starts from pure noise on the others' levels (clips joined only by the reference).
        sampler: a flow sampler (default :class:`FlowEulerSampler`).
    """
    if schedule.frames != model.frames or schedule.motion_frames != 1:
        raise ValueError(
            f"schedule (frames {schedule.frames}, motion_frames {schedule.motion_frames}) must "
            f"have frames = model.frames ({model.frames}) and motion_frames = 1"
        )
    sampler = sampler or FlowEulerSampler()
    denoiser = model if guidance == 1 else AudioGuidance(model, guidance)
    flow = FlowMatching()
    b, total = codes.shape[0], codes.shape[1]
    motion = model.frames - 1
    grid, mask = schedule.grid(steps, b, device=reference.device)
    if not carry:
        grid[:, :, 1] = grid[:, :, 2]
    generator = torch.Generator(device=reference.device).manual_seed(seed)
    carried, begin = reference, 0  # begin: the video frame of this clip's first motion frame
    for clip in range(num_clips(total, motion)):
        index = torch.arange(begin, begin + motion).clamp_max(total - 1)
        known = reference.new_zeros(b, reference.shape[1], model.frames, *reference.shape[2:])
        known[:, :, 0] = reference
        if carry:
            known[:, :, 1] = carried
        noise = torch.randn(known.shape, generator=generator, device=known.device)
        start = flow.interpolate(known, noise, grid[0])  # reference clean, carried at g[lag]
        out = sampler.sample(denoiser, start, timesteps=grid, clean_mask=mask, fixed=known,
                             model_kwargs={"audio": codes[:, index]}, progress=False)
        first = 1 if clip == 0 else 2  # later clips: their first motion frame is old
        new = out[:, :, first : first + max(0, total - (begin + first - 1))]
        yield new
        carried = out[:, :, -1]
        begin += motion - 1


class AudioGuidance(torch.nn.Module):
    """Classifier-free guidance on the audio: ``v_null + scale (v_audio - v_null)``, both
    branches in one doubled batch (``v_null``: every code replaced by ``null_audio``)."""

    def __init__(self, model: ReadDenoiser, scale: float) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale ({scale}) must be > 0")
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        drop = torch.arange(2 * b, device=x.device) >= b
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([audio, audio]), drop)
        cond, null = both.chunk(2)
        return null + self.scale * (cond - null)


class Mp4Stream:
    """Write frames to an mp4 (H.264 + AAC) as they come; atomic on :meth:`close`.

    ``write(frames c k h w)`` in [-1, 1] encodes those frames and the audio samples that belong
    to them (``audio`` given up front: frame ``j`` owns samples ``[j spf, (j+1) spf)``). The
    file is written under a temporary name and renamed over ``path`` by :meth:`close`
    (use as a context manager; on an exception the temporary file is removed). libx264 runs
    with ``tune=zerolatency`` (no lookahead, no B-frames): a frame is encoded and muxed when
    written, not buffered.
    """

    def __init__(self, path: str | os.PathLike, *, fps: int, sample_rate: int,
                 audio: torch.Tensor | None = None, crf: int = 18) -> None:
        if sample_rate % fps:
            raise ValueError(f"sample_rate ({sample_rate}) must be a multiple of fps ({fps})")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.fps, self.sample_rate, self.spf = fps, sample_rate, sample_rate // fps
        # no copy of a float CPU waveform: it is clamped chunk by chunk as it is encoded
        self.audio = None if audio is None else audio.detach().float().cpu()
        self.container = av.open(str(self.tmp), "w", format="mp4")
        self.crf = crf
        self.video_stream = None
        self.audio_stream = None
        self.frames = 0
        self.audio_pos = 0

    def _open_streams(self, height: int, width: int) -> None:
        vs = self.container.add_stream("libx264", rate=self.fps)
        vs.width, vs.height, vs.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        vs.time_base = Fraction(1, self.fps)
        # zerolatency: no lookahead and no B-frames, so each frame leaves the encoder at once
        # and the encoder's buffers do not hold a window of frames.
        vs.options = {"crf": str(self.crf), "tune": "zerolatency"}
        self.video_stream = vs
        if self.audio is not None:
            self.audio_stream = self.container.add_stream("aac", rate=self.sample_rate)
            self.audio_stream.layout = "mono"

    def write(self, frames: torch.Tensor) -> None:
        if frames.ndim != 4 or frames.shape[0] not in (1, 3):
            raise ValueError(f"frames must be c k h w with c 1 or 3; got {tuple(frames.shape)}")
        if self.video_stream is None:
            self._open_streams(frames.shape[2], frames.shape[3])
        pix = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pix = pix.expand(3, -1, -1, -1).permute(1, 2, 3, 0).cpu().numpy()
        vs = self.video_stream
        for img in pix:
            img = np.pad(img, ((0, vs.height - img.shape[0]), (0, vs.width - img.shape[1]), (0, 0)),
                         mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = self.frames, Fraction(1, self.fps)
            self.container.mux(vs.encode(frame))
            self.frames += 1
        self._write_audio(self.frames * self.spf)

    def _write_audio(self, upto: int, final: bool = False) -> None:
        """Encode the audio up to sample ``upto`` in whole AAC frames (1024 samples); the
        ``final`` call also writes the last partial one."""
        if self.audio_stream is None:
            return
        upto = min(upto, self.audio.shape[-1])
        while self.audio_pos + 1024 <= upto or (final and self.audio_pos < upto):
            chunk = self.audio[None, self.audio_pos : min(self.audio_pos + 1024, upto)]
            chunk = chunk.clamp(-1, 1).numpy()
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            af.sample_rate, af.pts = self.sample_rate, self.audio_pos
            af.time_base = Fraction(1, self.sample_rate)
            self.container.mux(self.audio_stream.encode(af))
            self.audio_pos += chunk.shape[-1]

    def close(self) -> Path:
        if self.video_stream is not None:
            self.container.mux(self.video_stream.encode(None))
            if self.audio_stream is not None:
                self._write_audio(self.frames * self.spf, final=True)
                self.container.mux(self.audio_stream.encode(None))
        self.container.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def __enter__(self) -> "Mp4Stream":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.container.close()
            self.tmp.unlink(missing_ok=True)


def load_run(run_dir: str | os.PathLike):
    """``(cfg, data, codec, model, schedule)`` of a finished training run folder."""
    from recipes.read_a2v.train import ReadRecipe, build_schedule

    run_dir = Path(run_dir)
    cfg = load_config(ReadRecipe, run_dir / "config.yaml")
    codec = FrameAudioCodec.from_pretrained(run_dir / "codec" / "model").eval()
    model = ReadDenoiser.from_pretrained(run_dir / "denoiser" / "model").eval()
    return cfg, AVData(cfg.data), codec, model, build_schedule(cfg)


def driving_clip(cfg, data: AVData, frames: int, index: int = 0, seed_offset: int = 20_000):
    """A held-out synthetic clip of ``frames`` frames: ``(video 3 L h w, waveform n, audio frames)``."""
    from avblocks.data import SyntheticSoundingVideo

    d = cfg.data
    clips = SyntheticSoundingVideo(num_clips=index + 1, num_frames=frames, size=d.size, fps=d.fps,
                                   sample_rate=d.sample_rate, num_classes=d.num_classes,
                                   seed=d.seed + seed_offset)
    item = clips[index]
    video, audio, _ = data.model_inputs(torch.utils.data.default_collate([item]))
    return video[0], item["audio"], audio


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--frames", type=int, default=64, help="video frames to generate")
    parser.add_argument("--out", type=Path, default=Path("read_long.mp4"))
    parser.add_argument("--clip", type=int, default=0, help="held-out clip index (driving audio)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: schedule.sample_steps")
    parser.add_argument("--guidance", type=float, default=None, help="default: schedule.guidance")
    args = parser.parse_args(argv)
    cfg, data, codec, model, schedule = load_run(args.run_dir)
    args.guidance = args.guidance or cfg.schedule.guidance
    video, waveform, audio = driving_clip(cfg, data, args.frames, args.clip)
    began = time.perf_counter()
    with torch.no_grad():
        codes = codec.encode(audio)
    written = 0
    with Mp4Stream(args.out, fps=cfg.data.fps, sample_rate=cfg.data.sample_rate,
                   audio=waveform) as stream:
        for new in iter_long_generation(model, codes, video[None, :, 0], schedule=schedule,
                                        steps=args.steps or cfg.schedule.sample_steps,
                                        seed=args.seed, guidance=args.guidance):
            stream.write(new[0])
            written += new.shape[2]
    seconds = time.perf_counter() - began
    summary = {"out": str(args.out), "frames": written, "seconds": round(seconds, 2),
               "frames_per_second": round(written / seconds, 2)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
