"""Pipelines: one saved folder per system, sampled in three lines.

    from avblocks.pipelines import Pipeline
    pipe = Pipeline.from_pretrained("outputs/demo/pipeline")
    pipe(labels=[0]).save("clip.mp4")

- :class:`ProAVDiTPipeline`: joint, audio-to-video (``audio=``) and video-to-audio (``video=``);
- :class:`AVDiTPipeline`: joint generation with a frozen image DiT and adapters;
- :class:`ReadPipeline`: audio-driven video from a reference picture, any length, streamed;
- :class:`DualStreamPipeline`: joint, audio-to-video and video-to-audio with a two-stream DiT;
- :class:`SoundingVideo`: what they return (``.save("x.mp4")``, ``.preview("x.png")``).

Folders are local and self-contained (:mod:`avblocks.pipelines.folder`): safetensors weights
and JSON, every file's SHA-256 checked on load; nothing is downloaded or unpickled.
"""

from avblocks.pipelines.av_dit import AVDiTPipeline, DDPMSampling
from avblocks.pipelines.base import PIPELINES, Pipeline
from avblocks.pipelines.dual_stream import DualStreamPipeline
from avblocks.pipelines.output import SoundingVideo
from avblocks.pipelines.proav_dit import FlowSampling, ProAVDiTPipeline
from avblocks.pipelines.read import ReadPipeline, ReadSampling

__all__ = [
    "PIPELINES",
    "Pipeline",
    "ProAVDiTPipeline",
    "AVDiTPipeline",
    "ReadPipeline",
    "DualStreamPipeline",
    "SoundingVideo",
    "FlowSampling",
    "DDPMSampling",
    "ReadSampling",
]
