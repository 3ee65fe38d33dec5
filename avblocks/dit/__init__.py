"""Diffusion-transformer blocks: embedders, adaLN-Zero, DiT / ST-DiT blocks, patches, plane layouts."""

from avblocks.dit.adapter_io import (
    adapter_state_dict,
    count_parameters,
    freeze,
    load_adapters,
    save_adapters,
)
from avblocks.dit.adapters import (
    AdaptedDiTBlock,
    AVFusionBlock,
    BottleneckAdapter,
    TemporalAdapter,
    frame_position_embedding,
)
from avblocks.dit.audio_cross import AudioBinding, AudioSTDiTBlock, FrameAudioCrossAttention
from avblocks.dit.blocks import DiTAttention, DiTBlock, DiTMlp, FinalLayer, STDiTBlock
from avblocks.dit.cache import (
    CacheStats,
    FirstBlockCache,
    StepCache,
    TeaCache,
    fit_rescale,
    relative_l1,
)
from avblocks.dit.compile import (
    bf16_autocast,
    checkpoint_blocks,
    compile_blocks,
    repeated_blocks,
    uncheckpoint_blocks,
)
from avblocks.dit.dit import DIT_PRESETS, DiT, DiTConfig, load_dit_checkpoint, read_dit_state_dict
from avblocks.dit.embedders import LabelEmbedder, TimestepEmbedder, timestep_embedding
from avblocks.dit.lora import LoRALinear, add_lora, lora_disabled, merge_lora, unmerge_lora
from avblocks.dit.modulation import AdaLNZero, modulate, to_tokens
from avblocks.dit.packed_attention import PackedPlanesMask
from avblocks.dit.packed_stdit import (
    PackedSTDiT,
    PackedSTDiTBlock,
    PackedSTDiTConfig,
    packed_from_canvas,
)
from avblocks.dit.packed_tokens import PackedTokens
from avblocks.dit.patch import (
    PatchEmbed2d,
    PatchEmbed3d,
    patchify2d,
    patchify3d,
    unpatchify2d,
    unpatchify3d,
)
from avblocks.dit.plane_pack import PlanePack
from avblocks.dit.plane_stack import PLANE_ORDER, PlaneStack
from avblocks.dit.stdit import STDiT, STDiTConfig

__all__ = [
    "DiTBlock",
    "STDiTBlock",
    "FinalLayer",
    "DiTAttention",
    "DiTMlp",
    "TimestepEmbedder",
    "LabelEmbedder",
    "timestep_embedding",
    "AdaLNZero",
    "modulate",
    "to_tokens",
    "PatchEmbed2d",
    "PatchEmbed3d",
    "patchify2d",
    "unpatchify2d",
    "patchify3d",
    "unpatchify3d",
    "PlaneStack",
    "PLANE_ORDER",
    "STDiT",
    "STDiTConfig",
    "PlanePack",
    "PackedTokens",
    "PackedPlanesMask",
    "PackedSTDiT",
    "PackedSTDiTBlock",
    "PackedSTDiTConfig",
    "packed_from_canvas",
]

__all__ += [
    "DiT",
    "DiTConfig",
    "DIT_PRESETS",
    "load_dit_checkpoint",
    "read_dit_state_dict",
    "LoRALinear",
    "add_lora",
    "merge_lora",
    "unmerge_lora",
    "lora_disabled",
    "BottleneckAdapter",
    "TemporalAdapter",
    "AdaptedDiTBlock",
    "AVFusionBlock",
    "frame_position_embedding",
    "freeze",
    "count_parameters",
    "adapter_state_dict",
    "save_adapters",
    "load_adapters",
    "FirstBlockCache",
    "TeaCache",
    "StepCache",
    "CacheStats",
    "fit_rescale",
    "relative_l1",
    "compile_blocks",
    "bf16_autocast",
    "checkpoint_blocks",
    "uncheckpoint_blocks",
    "repeated_blocks",
]

__all__ += [
    "FrameAudioCrossAttention",
    "AudioSTDiTBlock",
    "AudioBinding",
]
