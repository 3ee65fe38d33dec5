"""The multi-scale attention stage of the MDSA autoencoder: refine and fuse two tri-planes.

Inputs are the video and audio tri-planes of one clip (same ``b``, ``c`` and ``t``). The
stages run in this order; each can be switched off (``stages``) for ablations, and each is a
zero-initialised residual block, so a fresh stage is the identity:

1. ``"temporal"``: :class:`MTSelfAttention` on the planes that contain time. The ``th`` and
   ``tw`` planes of a stream are concatenated along their last axis into one time stream
   ``b c t (h + w)``; MT-SelfAttn treats every position of that axis as its own sequence
   along ``t``, so this is exactly "the same block applied to ``th`` and to ``tw``" (shared
   weights), in one call. One block per modality.
2. ``"spatial"``: :class:`SpatialAttention` on the ``hw`` plane (self-attention over its
   ``h x w`` tokens). One block per modality.
3. ``"gcm"``: :class:`GCMAttention` between the two time streams: time is cut into ``groups``
   aligned groups and, within a group, every video ``th``/``tw`` token attends to every audio
   token and back. The ``hw`` planes carry no time, so they take no part in cross-modal
   fusion (a choice: they hold appearance and timbre, which the class label already ties).
4. ``"biblock"``: :class:`BiBlockCrossAttention` between the two time streams, blocks of
   ``block_frames`` frames plus ``halo`` neighbouring blocks on each side; local along time only
   (tiling the concatenated ``h + w`` axis would pair unrelated rows).

Locality: with only ``"gcm"`` on, a change to the audio of group ``g`` changes video planes
``th``/``tw`` only in the frames of group ``g``, and never ``hw``. With ``"temporal"`` on,
information travels along time within a modality, so that claim holds only without it.
"""

import torch
from torch import nn

from avblocks.attention import (
    BiBlockCrossAttention,
    GCMAttention,
    MTSelfAttention,
    SpatialAttention,
)
from avblocks.latent.triplane import TriPlane

__all__ = ["PlaneFusion", "STAGES"]

STAGES = ("temporal", "spatial", "gcm", "biblock")
"""The fusion stages, in the order they run."""


def _time_stream(planes: TriPlane) -> torch.Tensor:
    return torch.cat([planes.th, planes.tw], dim=-1)


def _split_time_stream(stream: torch.Tensor, planes: TriPlane, hw: torch.Tensor) -> TriPlane:
    th, tw = stream.split([planes.h, planes.w], dim=-1)
    return TriPlane(hw=hw, th=th, tw=tw)


class PlaneFusion(nn.Module):
    """Refines a video and an audio :class:`TriPlane` (``c = dim`` channels each)."""

    def __init__(
        self,
        *,
        dim: int = 64,
        heads: int = 4,
        scales: tuple[int, ...] = (1, 2, 4),
        groups: int = 4,
        block_frames: int = 2,
        halo: int = 0,
        stages: tuple[str, ...] = STAGES,
    ):
        super().__init__()
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown fusion stages {unknown}; choose from {STAGES}")
        self.stages = tuple(s for s in STAGES if s in stages)
        off = nn.ModuleDict()  # a switched-off stage owns no parameters
        self.temporal = (
            nn.ModuleDict({m: MTSelfAttention(dim=dim, heads=heads, scales=scales) for m in ("video", "audio")})
            if "temporal" in stages else off
        )
        self.spatial = (
            nn.ModuleDict({m: SpatialAttention(dim=dim, heads=heads) for m in ("video", "audio")})
            if "spatial" in stages else off
        )
        self.gcm = (
            GCMAttention(video_dim=dim, audio_dim=dim, groups=groups, heads=heads)
            if "gcm" in stages else None
        )
        self.biblock = (
            BiBlockCrossAttention(video_dim=dim, audio_dim=dim, block_frames=block_frames, halo=halo, heads=heads)
            if "biblock" in stages else None
        )

    def forward(self, video: TriPlane, audio: TriPlane) -> tuple[TriPlane, TriPlane]:
        if (video.b, video.c, video.t) != (audio.b, audio.c, audio.t):
            raise ValueError(
                f"video and audio planes must share (b, c, t); got video "
                f"{(video.b, video.c, video.t)} and audio {(audio.b, audio.c, audio.t)}"
            )
        tv, ta = _time_stream(video), _time_stream(audio)
        hv, ha = video.hw, audio.hw
        if "temporal" in self.stages:
            tv, ta = self.temporal["video"](tv), self.temporal["audio"](ta)
        if "spatial" in self.stages:
            hv, ha = self.spatial["video"](hv), self.spatial["audio"](ha)
        if self.gcm is not None:
            tv, ta = self.gcm(tv, ta)
        if self.biblock is not None:
            tv, ta = self.biblock(tv, ta)
        return _split_time_stream(tv, video, hv), _split_time_stream(ta, audio, ha)
