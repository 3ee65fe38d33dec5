"""Couplings by name, and the plain config a model builds one from.

``COUPLINGS`` names every coupling class; :class:`CouplingConfig` is what a model config holds
(which coupling, how often, and the options each kind reads); :func:`build_coupling` turns it
into a module (``None`` for ``kind="none"``: two streams that never meet, the baseline).
"""

from dataclasses import dataclass
from typing import Annotated, Literal

from avblocks.attention.time_rope import TimeRotary
from avblocks.config_rules import at_least, in_range
from avblocks.coupling.adapters import BiBlockCoupling, GCMCoupling, RandomShiftCoupling
from avblocks.coupling.base import Coupling
from avblocks.coupling.cross import GatedCrossAttention
from avblocks.coupling.joint import JointAttention
from avblocks.coupling.resample import ResampledAddition

__all__ = ["COUPLINGS", "CouplingKind", "CouplingConfig", "build_coupling"]

CouplingKind = Literal["none", "cross", "joint", "resample", "gcm", "biblock", "random_shift"]

COUPLINGS: dict[str, type[Coupling]] = {
    "cross": GatedCrossAttention,
    "joint": JointAttention,
    "resample": ResampledAddition,
    "gcm": GCMCoupling,
    "biblock": BiBlockCoupling,
    "random_shift": RandomShiftCoupling,
}
"""Coupling classes by the name a config uses."""


@dataclass
class CouplingConfig:
    """Which coupling a two-stream model uses, where, and its options.

    Each kind reads only its own options: ``cross`` and ``joint``: ``heads``, ``window``;
    ``resample``: ``window``; ``gcm``: ``heads``, ``groups``; ``biblock``: ``heads``,
    ``block_frames``, ``halo``; ``random_shift``: ``heads``, ``shift_window``, ``max_shift``.
    """

    kind: CouplingKind = "cross"
    every: Annotated[int, at_least(1)] = 1  # a coupling after every k-th block: blocks k-1, 2k-1, ...
    heads: Annotated[int, at_least(1)] = 4
    # seconds each token sees of the other stream (None: all)
    window: Annotated[float | None, in_range(0, 1e6, lo_open=True)] = None
    groups: Annotated[int, at_least(1)] = 4  # gcm: aligned groups of video frames
    block_frames: Annotated[int, at_least(1)] = 1  # biblock: video frames per block
    halo: Annotated[int, at_least(0)] = 0  # biblock: neighbouring blocks seen on each side
    shift_window: Annotated[int, at_least(1)] = 5  # random_shift: audio frames seen per video frame
    max_shift: Annotated[int, at_least(0)] = 2  # random_shift: largest random shift in audio frames (training)


def build_coupling(config: CouplingConfig, *, video_dim: int, audio_dim: int,
                   rotary: TimeRotary | None = TimeRotary(),  # noqa: B008 (frozen)
                   conditioned: bool = True) -> Coupling | None:
    """The coupling ``config`` names, for streams of these widths (``None`` for ``"none"``).

    ``rotary`` and ``conditioned`` go to the couplings that take them (cross, joint, resample).
    """
    if config.every < 1:
        raise ValueError(f"every ({config.every}) must be >= 1")
    kind, widths = config.kind, dict(video_dim=video_dim, audio_dim=audio_dim)
    if kind == "none":
        return None
    if kind in ("cross", "joint"):
        return COUPLINGS[kind](**widths, heads=config.heads, window=config.window, rotary=rotary,
                               conditioned=conditioned)
    if kind == "resample":
        return ResampledAddition(**widths, window=config.window, conditioned=conditioned)
    if kind == "gcm":
        return GCMCoupling(**widths, heads=config.heads, groups=config.groups)
    if kind == "biblock":
        return BiBlockCoupling(**widths, heads=config.heads, block_frames=config.block_frames, halo=config.halo)
    if kind == "random_shift":
        return RandomShiftCoupling(**widths, heads=config.heads, window=config.shift_window,
                                   max_shift=config.max_shift)
    raise ValueError(f"unknown coupling kind {kind!r}; known: 'none', {', '.join(map(repr, COUPLINGS))}")
