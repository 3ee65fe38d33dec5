"""What a pipeline returns: generated sounding videos a person can use directly.

    out = pipe(labels=[0, 1])
    out.video, out.audio          # b 3 t h w in [-1, 1], b n (mono) or b ch n
    out.save("clip.mp4")          # clip_00.mp4, clip_01.mp4 (one clip: clip.mp4)
    out.preview("clip.png")       # frames above the spectrogram, one row per clip
    out[0].save("first.mp4")

``save`` writes H.264 + AAC mp4 files at the spec's exact frame rate
(:func:`avblocks.data.write_mp4`, atomic); ``preview`` writes a PNG
(:func:`avblocks.data.preview.save_preview` for one clip, a contact sheet for several).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from avblocks.data.mp4 import write_mp4
from avblocks.data.preview import save_contact_sheet, save_preview
from avblocks.spec import AVSpec

__all__ = ["SoundingVideo"]


@dataclass
class SoundingVideo:
    """A batch of sounding videos: ``video b 3 t h w`` in [-1, 1] and ``audio b n | b ch n``.

    ``labels`` (``b``) when the pipeline was given classes; ``spec`` says the frame and
    sample rates the tensors are at.
    """

    video: Tensor
    audio: Tensor
    spec: AVSpec
    labels: Tensor | None = None
    first_index: int = field(default=0, repr=False)  # clip i of a batch keeps its number in titles

    def __post_init__(self) -> None:
        if self.video.ndim != 5 or self.audio.ndim not in (2, 3) or len(self.video) != len(self.audio):
            raise ValueError(f"expected video b 3 t h w and audio b n | b ch n with one batch, got "
                             f"{tuple(self.video.shape)} and {tuple(self.audio.shape)}")

    def __len__(self) -> int:
        return self.video.shape[0]

    def __getitem__(self, i: int) -> "SoundingVideo":
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range for {len(self)} clips")
        i %= len(self)
        labels = None if self.labels is None else self.labels[i : i + 1]
        return SoundingVideo(self.video[i : i + 1], self.audio[i : i + 1], self.spec, labels,
                             first_index=self.first_index + i)

    @property
    def num_frames(self) -> int:
        return self.video.shape[2]

    def _title(self, i: int) -> str:
        label = "" if self.labels is None else f" (class {int(self.labels[i])})"
        return f"clip {self.first_index + i}{label}"

    def _paths(self, path: Path) -> list[Path]:
        if len(self) == 1:
            return [path]
        return [path.with_name(f"{path.stem}_{i:02d}{path.suffix}") for i in range(len(self))]

    def save(self, path: "str | os.PathLike[str]", *, crf: int = 18) -> Path | list[Path]:
        """Write each clip as an mp4 (H.264 + AAC): ``path`` for one clip, ``stem_XX.mp4`` for
        several. Returns the path or the list of paths."""
        path = Path(path)
        if path.suffix.lower() != ".mp4":
            raise ValueError(f"{path}: save writes mp4 files; give a path ending in .mp4")
        paths = self._paths(path)
        for i, out in enumerate(paths):
            write_mp4(out, self.video[i], self.audio[i], self.spec.fps, self.spec.sample_rate, crf=crf)
        return paths[0] if len(self) == 1 else paths

    def preview(self, path: "str | os.PathLike[str]") -> Path:
        """A PNG: frames above the spectrogram (one row per clip when there are several)."""
        path = Path(path)
        if len(self) == 1:
            save_preview(path, self.video[0], self.audio[0], self.spec.sample_rate, fps=self.spec.fps,
                         title=self._title(0))
        else:
            save_contact_sheet(path, self.video, self.audio, self.spec.sample_rate,
                               [self._title(i) for i in range(len(self))])
        return path
