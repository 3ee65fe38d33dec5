"""A procedurally generated sounding-video dataset: bouncing objects that click when they land.

The world
---------
Each clip shows one object (a disc, square or diamond, ``2 * OBJECT_RADIUS`` = 20% of the
frame tall) in front of a flat background with a static floor strip along the bottom of the
frame. The object falls under constant gravity and bounces on the floor; it drifts sideways
at a constant speed (covering 45-70% of the width over the clip, so it never covers one
pixel for half of the clip, which a median background estimate relies on) and never reaches
a side wall, so *floor contacts are the only bounces*. Every floor contact emits one sound event; nothing
else makes a sound, apart from a faint noise floor.

Coordinates are normalised to the frame: ``x`` to the right and ``y`` downwards, both in
``[0, 1]``; pixel ``i`` covers ``[i, i+1) / size`` and is sampled at its centre. Time is
measured in video frames: frame ``k`` shows the world at time ``k / fps`` seconds and owns
the audio samples ``[k*spf, (k+1)*spf)`` with ``spf = sample_rate / fps`` (an integer).

Motion model
------------
The height of the object above its resting position is a chain of parabolic arcs, one per
flight between two floor contacts: an arc that leaves the floor at frame ``a`` and lands at
frame ``b`` has height ``0.5 * g * (t - a) * (b - t)`` for ``a <= t <= b`` (gravity ``g`` in
frame units per frame², one value per clip). Contacts happen at integer frames, so each
flight lasts a whole number of frames (3 to 7, drawn per flight); the take-off speed that
this implies is the "kick" the floor gives at each bounce, so successive bounces may differ
in height (think of a ball on a vibrating floor). The clip starts part-way through a first
flight (lasting 3 to 7.5 frames, not necessarily whole), and the flight in progress at the
last frame lands after the clip. Contacts are drawn in frames ``1 .. num_frames - 2`` only,
so every bounce is visible as a reversal with one frame on each side; no contact ever falls
in frame 0 or in the last frame. With the defaults (16 frames) a clip has 2 to 5 bounces
(over 1000 clips: 28% two, 60% three, 12% four, 0.4% five); shorter clips may have one.

Bounce frame: the frame ``k`` at which the object touches the floor, i.e. the bottom of the
rendered shape lies exactly on the floor line ``y = FLOOR_Y`` and the vertical velocity
reverses (downwards before, upwards after). It is the frame in which the object's centroid
is lowest. Between contacts the object is strictly above the floor (by at least ``g``, about
2 pixels at size 32, in the frames next to a contact). Edges are anti-aliased (coverage
ramps linearly over one pixel of signed distance); colours in [0, 1] map to [-1, 1].

Sound
-----
A bounce at frame ``k`` starts a sound event at sample ``k * spf`` exactly: the waveform
before that sample holds only the noise floor (and the far tail of any earlier event, more
than 50 dB down by then), and the event's first sample is already at full amplitude (cosine
phase: a contact is a click). The event is a sum of sinusoidal partials (or, for the
"click" class, white noise) under an exponential decay of 15-60 ms (capped at half a frame,
``0.5 / fps`` s, so at high frame rates an event still fades by 52 dB before the next
contact, which is at least 3 frames later), with a peak amplitude of 0.35 to 0.8 growing
with the impact speed. A Gaussian noise floor of standard deviation
0.002 (about -54 dBFS) is added everywhere, then the waveform is clipped to [-1, 1].

Classes
-------
A class fixes the object's shape and colour, the background colour and the sound (pitch
and timbre); see ``CLASSES``. Class ``i`` differs from every other class in colour,
background and pitch, so a class-conditional model has something to learn in both
modalities. Labels are ``index % num_classes`` (balanced, deterministic). Per clip, the
colours are jittered slightly and the gravity, drift, start position and flight durations
are drawn at random.

Randomness
----------
Everything about clip ``index`` comes from one ``torch.Generator`` seeded from
``(seed, index)`` (hashed to the 32 bits the CPU generator actually uses); the global RNG is
never touched, so an item is the same whatever the order or process it is drawn in.
"""

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor
from torch.utils.data import Dataset

from avblocks.spec import AVSpec
from avblocks.timing import as_fraction

__all__ = ["SyntheticSoundingVideo", "ClassSpec", "CLASSES", "FLOOR_Y", "OBJECT_RADIUS"]

FLOOR_Y = 0.875
"""Normalised height of the floor line; the floor strip fills ``y >= FLOOR_Y``."""
OBJECT_RADIUS = 0.1
"""Half-height (and half-width) of every object, normalised; its bottom is ``y + OBJECT_RADIUS``."""
_TOP_MARGIN = 0.03  # the object's top never comes closer than this to the top edge
_MIN_FLIGHT, _MAX_FLIGHT = 3, 7  # whole frames between two contacts
_MAX_FIRST_FLIGHT = 7.5  # the clip may start inside a flight up to this long
_DRIFT_SPAN = (0.45, 0.7)  # horizontal distance travelled over the clip, normalised
_AMPLITUDE = (0.35, 0.8)  # event peak amplitude, slowest to fastest impact
_NOISE_STD = 0.002
_COLOUR_JITTER = 0.03


@dataclass(frozen=True)
class ClassSpec:
    """What a class looks and sounds like.

    ``shape``: "disc", "square" or "diamond" (all with half-height ``OBJECT_RADIUS``).
    ``colour`` / ``background``: RGB in [0, 1]. ``pitch_hz``: fundamental of the event;
    ``partials``: (frequency ratio, amplitude) pairs; an empty tuple means a white-noise
    click. ``decay_s``: time constant of the exponential decay.
    """

    shape: str
    colour: tuple[float, float, float]
    background: tuple[float, float, float]
    pitch_hz: float
    partials: tuple[tuple[float, float], ...]
    decay_s: float


_SINE = ((1.0, 1.0),)
_ODD = ((1.0, 1.0), (3.0, 1 / 3), (5.0, 1 / 5))  # hollow, square-wave-like
_SAW = ((1.0, 1.0), (2.0, 1 / 2), (3.0, 1 / 3), (4.0, 1 / 4))  # bright, sawtooth-like
_BELL = ((1.0, 1.0), (2.76, 0.5), (5.40, 0.25))  # inharmonic, metallic

CLASSES: tuple[ClassSpec, ...] = (
    # Backgrounds are the corners of the cube {0.05, 0.3}^3: dark, and pairwise >= 0.25 apart.
    ClassSpec("disc", (0.92, 0.22, 0.20), (0.05, 0.05, 0.30), 262.0, _SINE, 0.050),
    ClassSpec("square", (0.25, 0.85, 0.30), (0.30, 0.05, 0.05), 523.0, _ODD, 0.040),
    ClassSpec("diamond", (0.35, 0.60, 0.98), (0.30, 0.30, 0.05), 1047.0, _BELL, 0.060),
    ClassSpec("disc", (0.97, 0.88, 0.25), (0.30, 0.05, 0.30), 0.0, (), 0.015),
    ClassSpec("square", (0.92, 0.35, 0.90), (0.05, 0.30, 0.05), 392.0, _SAW, 0.045),
    ClassSpec("diamond", (0.30, 0.92, 0.92), (0.05, 0.05, 0.05), 784.0, _SINE, 0.040),
    ClassSpec("disc", (0.98, 0.60, 0.15), (0.05, 0.30, 0.30), 196.0, _ODD, 0.055),
    ClassSpec("square", (0.95, 0.95, 0.95), (0.30, 0.30, 0.30), 1568.0, _SINE, 0.030),
)
"""The class table; ``num_classes`` takes the first entries. Class 3 is the noise click."""
_FLOOR_SHADE = 0.55  # the floor is the background colour lightened towards grey


def _clip_seed(seed: int, index: int) -> int:
    """Mix (seed, index) into the 32 bits that torch's CPU generator keeps (splitmix64)."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return (z ^ (z >> 32)) & 0xFFFFFFFF


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=gen).item()


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=gen).item())


class SyntheticSoundingVideo(Dataset):
    """Procedural bouncing-object clips whose every floor contact makes a sound.

    See the module docstring for the world, the timing convention and the classes.

    Args:
        num_clips: length of the dataset.
        num_frames: frames per clip (at least 4).
        size: frame height and width in pixels (at least 16).
        fps: video frame rate (int, Fraction, or anything :func:`avblocks.timing.as_fraction`
            reads); ``sample_rate / fps`` must be a whole number of samples.
        sample_rate: audio sample rate in Hz.
        num_classes: number of classes, 1 to ``len(CLASSES)``.
        seed: dataset seed; clip ``index`` is a function of ``(seed, index)`` only.
        noise_std: standard deviation of the audio noise floor.

    Items are dicts of plain tensors (the default ``DataLoader`` collate batches them):

    - ``video``: ``float32 (3, num_frames, size, size)`` in [-1, 1];
    - ``audio``: ``float32 (num_frames * sample_rate / fps,)`` in [-1, 1];
    - ``label``: ``int`` in ``[0, num_classes)``;
    - ``event_frames``: ``bool (num_frames,)``, true at each bounce frame (the frames whose
      first audio sample starts a sound event). ``events(index)`` gives the frame indices.
    """

    def __init__(
        self,
        *,
        num_clips: int = 256,
        num_frames: int = 16,
        size: int = 32,
        fps: "int | Fraction | str" = 8,
        sample_rate: int = 16000,
        num_classes: int = 4,
        seed: int = 0,
        noise_std: float = _NOISE_STD,
    ) -> None:
        if num_clips < 1:
            raise ValueError(f"num_clips ({num_clips}) must be >= 1")
        if num_frames < 4:
            raise ValueError(
                f"num_frames ({num_frames}) must be >= 4 (a bounce needs a frame each side)"
            )
        if size < 16:
            raise ValueError(f"size ({size}) must be >= 16 pixels")
        fps = as_fraction(fps, "fps")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise ValueError(f"sample_rate ({sample_rate!r}) must be an integer >= 1")
        if (sample_rate / fps).denominator != 1:
            raise ValueError(
                f"sample_rate ({sample_rate}) / fps ({fps}) must be a whole number of samples, so "
                "that every video frame owns whole samples"
            )
        if not 1 <= num_classes <= len(CLASSES):
            raise ValueError(f"num_classes ({num_classes}) must be in [1, {len(CLASSES)}]")
        if not 0 <= seed < 2**63:
            raise ValueError(f"seed ({seed}) must be in [0, 2**63)")
        if not 0.0 <= noise_std < 0.1:
            raise ValueError(f"noise_std ({noise_std}) must be in [0, 0.1)")
        self.num_clips = num_clips
        self.num_frames = num_frames
        self.size = size
        self.fps = fps
        self.sample_rate = sample_rate
        self.num_classes = num_classes
        self.seed = seed
        self.noise_std = noise_std
        self.samples_per_frame = int(sample_rate / fps)
        self.num_samples = num_frames * self.samples_per_frame
        centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        self._grid_y = centres.view(1, size, 1)
        self._grid_x = centres.view(1, 1, size)

    @classmethod
    def from_spec(cls, spec: AVSpec, *, num_clips: int = 256, num_classes: int = 4, seed: int = 0,
                  noise_std: float = _NOISE_STD) -> "SyntheticSoundingVideo":
        """Clips as ``spec`` describes them (square frames, mono audio)."""
        h, w = spec.size
        if h != w or spec.channels != 1:
            raise ValueError(f"the synthetic set makes square frames and mono audio; spec has size "
                             f"{spec.size} and {spec.channels} audio channel(s)")
        return cls(num_clips=num_clips, num_frames=spec.num_frames, size=h, fps=spec.fps,
                   sample_rate=spec.sample_rate, num_classes=num_classes, seed=seed,
                   noise_std=noise_std)

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict[str, Tensor | int]:
        if not -self.num_clips <= index < self.num_clips:
            raise IndexError(f"index ({index}) out of range for {self.num_clips} clips")
        index %= self.num_clips
        gen = torch.Generator().manual_seed(_clip_seed(self.seed, index))
        label = index % self.num_classes
        spec = CLASSES[label]
        motion = self._draw_motion(gen)
        video = self._render_video(gen, spec, motion)
        audio = self._render_audio(gen, spec, motion)
        event_frames = torch.zeros(self.num_frames, dtype=torch.bool)
        event_frames[motion["bounces"]] = True
        return {"video": video, "audio": audio, "label": label, "event_frames": event_frames}

    def events(self, index: int) -> Tensor:
        """Ground-truth bounce frames of clip ``index`` (sorted ``LongTensor``, no rendering)."""
        index %= self.num_clips
        gen = torch.Generator().manual_seed(_clip_seed(self.seed, index))
        return self._draw_motion(gen)["bounces"]

    # -- motion ---------------------------------------------------------------------------

    def _draw_motion(self, gen: torch.Generator) -> dict[str, Tensor]:
        """Draw gravity, contacts and drift; return per-frame centres and the bounce frames."""
        t_last = self.num_frames - 1
        room = (FLOOR_Y - OBJECT_RADIUS) - (OBJECT_RADIUS + _TOP_MARGIN)
        g_max = 8.0 * room / _MAX_FIRST_FLIGHT**2  # the highest possible arc still fits
        gravity = _uniform(gen, 0.65 * g_max, g_max)

        # Contact times: the first in frames 1..(flight-1) of a first flight of length T0.
        first = _randint(gen, 1, min(_MAX_FLIGHT - 1, t_last - 1))
        first_flight = _uniform(gen, max(float(_MIN_FLIGHT), first + 0.25), _MAX_FIRST_FLIGHT)
        contacts = [first - first_flight, float(first)]  # arc boundaries (times, in frames)
        flights = [first_flight]
        while contacts[-1] <= t_last:
            now = int(contacts[-1])
            # A contact in the last frame would show no reversal: never land there.
            options = [d for d in range(_MIN_FLIGHT, _MAX_FLIGHT + 1) if now + d != t_last]
            flight = options[_randint(gen, 0, len(options) - 1)]
            contacts.append(float(now + flight))
            flights.append(float(flight))
        bounds = torch.tensor(contacts, dtype=torch.float64)
        bounces = torch.tensor([int(c) for c in contacts[1:] if c <= t_last], dtype=torch.long)

        # Height above the resting position, one parabolic arc per flight.
        times = torch.arange(self.num_frames, dtype=torch.float64)
        arc = torch.searchsorted(bounds, times, right=True) - 1  # arc containing each frame
        start, end = bounds[arc], bounds[arc + 1]
        height = 0.5 * gravity * (times - start) * (end - times)
        centre_y = (FLOOR_Y - OBJECT_RADIUS) - height

        # Constant sideways drift that stays clear of both walls.
        span = _uniform(gen, *_DRIFT_SPAN)
        direction = 1.0 if torch.rand((), generator=gen).item() < 0.5 else -1.0
        lo, hi = OBJECT_RADIUS + 0.02, 1.0 - OBJECT_RADIUS - 0.02 - span
        x0 = _uniform(gen, lo, hi)
        centre_x = x0 + span * times / t_last
        if direction < 0:
            centre_x = 1.0 - centre_x

        impact_speed = torch.tensor([0.5 * gravity * f for f in flights[: len(bounces)]])
        return {
            "centre_x": centre_x.float(),
            "centre_y": centre_y.float(),
            "bounces": bounces,
            "impact_speed": impact_speed,  # |dy/dt| at each contact, frame units
            "gravity": torch.tensor(gravity),
        }

    # -- rendering ------------------------------------------------------------------------

    def _jitter(self, gen: torch.Generator, rgb: tuple[float, float, float]) -> Tensor:
        noise = (torch.rand(3, generator=gen) * 2 - 1) * _COLOUR_JITTER
        return (torch.tensor(rgb) + noise).clamp(0.0, 1.0)

    def _render_video(self, gen: torch.Generator, spec: ClassSpec, motion: dict) -> Tensor:
        """Composite background, floor and object with anti-aliased edges; map to [-1, 1]."""
        background = self._jitter(gen, spec.background)
        floor = background + _FLOOR_SHADE * (0.5 - background)
        colour = self._jitter(gen, spec.colour)
        dy = self._grid_y - motion["centre_y"].view(-1, 1, 1)  # (t, h, w), normalised units
        dx = self._grid_x - motion["centre_x"].view(-1, 1, 1)
        if spec.shape == "disc":
            extent = torch.sqrt(dx * dx + dy * dy)
        elif spec.shape == "square":
            extent = torch.maximum(dx.abs(), dy.abs())
        else:  # diamond
            extent = dx.abs() + dy.abs()
        # Coverage from the signed distance in pixels: a 1-pixel linear ramp at the edge.
        alpha = (0.5 - (extent - OBJECT_RADIUS) * self.size).clamp(0.0, 1.0)
        floor_alpha = (0.5 + (self._grid_y - FLOOR_Y) * self.size).clamp(0.0, 1.0)  # (1, h, 1)
        scene = background.view(3, 1, 1, 1) + floor_alpha * (floor - background).view(3, 1, 1, 1)
        frame = scene + alpha * (colour.view(3, 1, 1, 1) - scene)
        return frame * 2.0 - 1.0

    def _render_audio(self, gen: torch.Generator, spec: ClassSpec, motion: dict) -> Tensor:
        """Noise floor plus one decaying event starting at sample ``k * spf`` per bounce ``k``."""
        audio = torch.randn(self.num_samples, generator=gen) * self.noise_std
        speed = motion["impact_speed"]
        g = float(motion["gravity"])
        slowest, fastest = 0.5 * g * _MIN_FLIGHT, 0.5 * g * _MAX_FIRST_FLIGHT
        loud = ((speed - slowest) / (fastest - slowest)).clamp(0.0, 1.0)
        amplitude = _AMPLITUDE[0] + (_AMPLITUDE[1] - _AMPLITUDE[0]) * loud
        # At most half a frame, so an event has decayed by e^-6 (52 dB) before the next contact.
        decay = min(spec.decay_s, 0.5 / float(self.fps))
        length = math.ceil(8 * decay * self.sample_rate)  # e^-8: inaudible after
        for frame, amp in zip(motion["bounces"].tolist(), amplitude.tolist(), strict=True):
            start = frame * self.samples_per_frame
            n = min(length, self.num_samples - start)
            tau = torch.arange(n, dtype=torch.float32) / self.sample_rate
            if spec.partials:
                tone = sum(
                    a * torch.cos(2 * math.pi * spec.pitch_hz * ratio * tau)
                    for ratio, a in spec.partials
                )
                tone = tone / sum(a for _, a in spec.partials)
            else:  # click: white noise with its first sample at full scale
                tone = torch.rand(n, generator=gen) * 2 - 1
                tone[0] = 1.0
            audio[start : start + n] += amp * torch.exp(-tau / decay) * tone
        return audio.clamp(-1.0, 1.0)
