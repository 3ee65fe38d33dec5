"""Cross-modal couplings: one interface over two token streams that carry times in seconds.

Every coupling is ``video', audio' = coupling(video b nv dv, audio b na da, video_time nv,
audio_time na, video_cond, audio_cond)`` (:class:`Coupling`), zero-gated (a fresh one is the
identity), shape-checked, and runs its attention through :func:`avblocks.attention.attend`:

- :class:`GatedCrossAttention`: gated bidirectional cross-attention (LTX-2, Ovi);
- :class:`JointAttention`: one attention over the packed streams, per-modality weights and
  adaLN (MMDiT, JavisDiT++);
- :class:`ResampledAddition`: each stream adds the other's features resampled to its rate
  (MMAudio);
- :class:`GCMCoupling`, :class:`BiBlockCoupling`, :class:`RandomShiftCoupling`: the library's
  GCM-Attn, Bi-Block CrossAttn and MM-Diffusion random-shift attention behind the interface.

Positions: :class:`~avblocks.attention.time_rope.TimeRotary` (RoPE on seconds, one frequency
table for both streams). References: :func:`~avblocks.coupling.reference.reference_couple`.
Tutorial: ``docs/couplings.md``.
"""

from avblocks.coupling.adapters import BiBlockCoupling, GCMCoupling, RandomShiftCoupling
from avblocks.coupling.base import Coupling, StreamGate
from avblocks.coupling.cross import GatedCrossAttention
from avblocks.coupling.joint import JointAttention
from avblocks.coupling.registry import COUPLINGS, CouplingConfig, CouplingKind, build_coupling
from avblocks.coupling.resample import ResampledAddition

__all__ = [
    "Coupling",
    "StreamGate",
    "GatedCrossAttention",
    "JointAttention",
    "ResampledAddition",
    "GCMCoupling",
    "BiBlockCoupling",
    "RandomShiftCoupling",
    "COUPLINGS",
    "CouplingConfig",
    "CouplingKind",
    "build_coupling",
]
