"""Diffusion-transformer blocks: embedders, adaLN-Zero, DiT / ST-DiT blocks, patches, plane stack."""

from avblocks.dit.blocks import DiTAttention, DiTBlock, DiTMlp, FinalLayer, STDiTBlock
from avblocks.dit.embedders import LabelEmbedder, TimestepEmbedder, timestep_embedding
from avblocks.dit.modulation import AdaLNZero, modulate, to_tokens
from avblocks.dit.patch import (
    PatchEmbed2d,
    PatchEmbed3d,
    patchify2d,
    patchify3d,
    unpatchify2d,
    unpatchify3d,
)
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
]
