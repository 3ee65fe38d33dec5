"""Long audio-driven generation (READ): clip after clip, one frame carried over, streamed.

Given a reference frame and audio codes for a track of any length, the video is made clip by
clip (:func:`iter_long_generation`). A clip is ``[reference, motion_1 .. motion_m]``:

- the reference frame is held clean in every clip (the identity anchor; the sampler keeps it
  bit-identical);
- the first motion frame is the *carried* frame: the last frame of the previous clip,
  re-noised to level ``g[lag]`` (one level below the others, which start from pure noise)
  and denoised on :class:`~avblocks.diffusion.schedules.ReadSchedule`'s asynchronous grid.
  For the first clip the carried frame is the reference itself (video frame 0 *is* the
  reference), so every clip starts the same way;
- clip ``0`` contributes its ``m`` motion frames (video frames ``0 .. m-1``), every later clip
  its ``m - 1`` new frames (its first motion frame overlaps the previous clip's last frame,
  which was already written and is kept), so ``L`` frames need
  ``1 + ceil((L - m) / (m - 1))`` clips (:func:`num_clips`); the last clip's audio past the
  end is padded with the last code and its extra frames are dropped;
- audio codes come from a causal codec over the whole track once (a code never depends on
  later audio, so this equals encoding it as it streams);
- noise comes from one ``torch.Generator`` seeded with ``seed``: a run is deterministic;
- optional audio classifier-free guidance (:class:`AudioGuidance`).

Memory: the generator yields each clip's new frames and keeps only the reference and the
carried frame, so the video is never held; a streaming mp4 writer
(:class:`avblocks.data.mp4.Mp4Writer`) can encode frames as they arrive. What still grows
with the length is the input: the waveform, its mel frames and the codes (about 11 KB per
frame at 16 kHz / 8 fps with 64 mel bins), see ``benchmarks/read_long_generation.py``.
"""

from collections.abc import Iterator

import torch

from avblocks.diffusion.flow import FlowMatching
from avblocks.diffusion.samplers import FlowEulerSampler
from avblocks.diffusion.schedules import ReadSchedule

__all__ = ["AudioGuidance", "iter_long_generation", "num_clips"]


def num_clips(frames: int, motion: int) -> int:
    """Clips needed for ``frames`` video frames with ``motion`` motion frames per clip."""
    if motion < 2 or frames < 1:
        raise ValueError(f"need motion ({motion}) >= 2 and frames ({frames}) >= 1")
    return 1 + max(0, -(-(frames - motion) // (motion - 1)))


@torch.no_grad()
def iter_long_generation(
    model: torch.nn.Module,
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

    def __init__(self, model: torch.nn.Module, scale: float) -> None:
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
