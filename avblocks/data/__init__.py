"""Data: real media I/O (PyAV), a video-folder dataset, previews."""

from avblocks.data.folder import DataError, VideoFolder
from avblocks.data.media import Clip, MediaError, MediaInfo, probe, read_clip
from avblocks.data.mp4 import write_mp4
from avblocks.data.preview import PreviewLayout, save_preview
from avblocks.data.synthetic import SyntheticSoundingVideo

__all__ = [
    "Clip",
    "DataError",
    "MediaError",
    "MediaInfo",
    "probe",
    "read_clip",
    "write_mp4",
    "save_preview",
    "PreviewLayout",
    "SyntheticSoundingVideo",
    "VideoFolder",
]
