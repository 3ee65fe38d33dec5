"""avblocks: typed, shape-checked building blocks for generating sounding video.

The public blocks by name; subpackages hold the rest (``avblocks.attention``,
``avblocks.audio``, ``avblocks.data``, ``avblocks.diffusion``, ``avblocks.dit``,
``avblocks.latent``, ``avblocks.metrics``, ``avblocks.coupling``). Optional heavy dependencies (vocos, matplotlib)
are imported only when used.
"""

from avblocks.attention import (
    BiBlockCrossAttention,
    GCMAttention,
    MTSelfAttention,
    SpatialAttention,
    TemporalAttention,
    attend,
    attention_backend,
)
from avblocks.attention.time_rope import TimeRotary
from avblocks.audio import (
    FrameAudioCodec,
    GriffinLim,
    HiFiGAN,
    LogMelNormalizer,
    MelConfig,
    VideoLikeAudio,
    Vocoder,
)
from avblocks.coupling import (
    BiBlockCoupling,
    Coupling,
    CouplingConfig,
    GatedCrossAttention,
    GCMCoupling,
    JointAttention,
    RandomShiftCoupling,
    ResampledAddition,
)
from avblocks.diffusion import ReadSchedule
from avblocks.diffusion.stream_pack import StreamPack
from avblocks.dit import (
    AudioSTDiTBlock,
    AVFusionBlock,
    DiT,
    DiTBlock,
    FrameAudioCrossAttention,
    LabelEmbedder,
    PackedSTDiT,
    PlanePack,
    PlaneStack,
    STDiTBlock,
    TemporalAdapter,
    TimestepEmbedder,
)
from avblocks.dit.dual_stream import DualStreamDiT
from avblocks.dit.stream_cache import StreamCache
from avblocks.latent import (
    MDSA,
    AVLatent,
    TriPlane,
    TriPlaneProjector,
    TriPlaneUnprojector,
    VolumeDecoder,
    VolumeEncoder,
)
from avblocks.saveload import SaveLoadMixin

__version__ = "0.1.0"

__all__ = [
    "attend",
    "attention_backend",
    "SpatialAttention",
    "TemporalAttention",
    "MTSelfAttention",
    "GCMAttention",
    "BiBlockCrossAttention",
    "MelConfig",
    "VideoLikeAudio",
    "LogMelNormalizer",
    "Vocoder",
    "HiFiGAN",
    "GriffinLim",
    "SaveLoadMixin",
    "TimestepEmbedder",
    "LabelEmbedder",
    "DiTBlock",
    "STDiTBlock",
    "PlaneStack",
    "PlanePack",
    "PackedSTDiT",
    "TriPlane",
    "TriPlaneProjector",
    "TriPlaneUnprojector",
    "VolumeEncoder",
    "VolumeDecoder",
    "AVLatent",
    "MDSA",
    "DiT",
    "TemporalAdapter",
    "AVFusionBlock",
    "AudioSTDiTBlock",
    "FrameAudioCrossAttention",
    "FrameAudioCodec",
    "ReadSchedule",
    "TimeRotary",
    "Coupling",
    "CouplingConfig",
    "GatedCrossAttention",
    "JointAttention",
    "ResampledAddition",
    "GCMCoupling",
    "BiBlockCoupling",
    "RandomShiftCoupling",
    "DualStreamDiT",
    "StreamPack",
    "StreamCache",
]
