"""The ``data`` section every recipe shares: where clips come from, and what a clip is.

A recipe's ``data`` config names the source (the built-in synthetic set, or ``folder``: your
own videos) and the clip (``num_frames`` at ``fps``, ``size`` x ``size`` pixels, audio at
``sample_rate`` with the log-mel settings ``n_fft`` / ``hop`` / ``n_mels``). :meth:`DataConfig.spec`
turns the clip fields into the library's :class:`~avblocks.spec.AVSpec`, the one description
every reader, transform, codec and pipeline takes; nothing in a recipe keeps its own copy.

``fps`` is exact: ``8``, ``"30000/1001"`` or ``23.4375`` in YAML all mean what they say
(:func:`avblocks.timing.as_fraction`).

``num_workers`` processes make the clips (decode the media) while the model trains
(:mod:`recipes.common.loading`); 0 makes them in the trainer's process.

Default audio features (the tiny preset): 16 kHz, n_fft 800, hop 200 (80 columns per
second, so 10 columns per frame at 8 fps), 64 mel bins.
"""

from dataclasses import dataclass
from fractions import Fraction

import torch
from torch.utils.data import DataLoader, Dataset

from avblocks.audio import MelConfig, Vocoder
from avblocks.codecs import AudioFrames
from avblocks.data import SyntheticSoundingVideo, VideoFolder
from avblocks.spec import AVSpec
from recipes.common.distributed import DistContext
from recipes.common.loading import ONE_PROCESS, step_loader

__all__ = ["DataConfig", "ClipData", "HELD_OUT_SEED_OFFSET"]

HELD_OUT_SEED_OFFSET = 10_000
"""The synthetic held-out clips are drawn with ``data.seed + HELD_OUT_SEED_OFFSET``."""


@dataclass
class DataConfig:
    folder: str | None = None  # a folder of videos; None: the built-in synthetic set
    num_clips: int = 512  # synthetic set size
    num_classes: int = 4  # synthetic classes (a folder is one class)
    seed: int = 0
    num_frames: int = 16
    size: int = 32
    fps: Fraction = Fraction(8)
    sample_rate: int = 16000
    n_fft: int = 800
    hop: int = 200
    n_mels: int = 64
    vocoder: str | None = None  # a local vocos folder (config.yaml + weights); None: Griffin-Lim
    num_workers: int = 0  # data-loader processes decoding clips while the model trains (0: none)

    def spec(self) -> AVSpec:
        """The clips this section describes, as the library's :class:`AVSpec`."""
        mel = MelConfig(sample_rate=self.sample_rate, n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels)
        return AVSpec(fps=self.fps, sample_rate=self.sample_rate, num_frames=self.num_frames,
                      size=(self.size, self.size), mel=mel)


class ClipData:
    """The dataset a config names, and its clips as model inputs.

    ``audio`` (:class:`~avblocks.codecs.AudioFrames`) turns waveforms into the normalised
    video-like audio models see and back; its inverse is Griffin-Lim, or the vocos folder
    ``data.vocoder`` names.
    """

    def __init__(self, config: DataConfig):
        self.config = config
        self.spec = config.spec()
        if config.folder is None:
            self.dataset: Dataset = self._synthetic(config.num_clips, config.seed)
            self.num_classes = config.num_classes
        else:
            self.dataset = VideoFolder(config.folder, num_frames=config.num_frames, fps=self.spec.fps,
                                       size=self.spec.size, sample_rate=config.sample_rate)
            self.num_classes = 1
        inverse = Vocoder.from_pretrained(config.vocoder) if config.vocoder else None
        self.audio = AudioFrames(self.spec, inverse)

    def _synthetic(self, num_clips: int, seed: int) -> SyntheticSoundingVideo:
        return SyntheticSoundingVideo.from_spec(self.spec, num_clips=num_clips,
                                                num_classes=self.config.num_classes, seed=seed)

    def loader(self, *, batch_size: int, total_steps: int, start_step: int = 0, seed: int = 0,
               ctx: DistContext = ONE_PROCESS) -> DataLoader:
        """This rank's batches of steps ``start_step ..`` with ``num_workers`` workers, pinned
        for a GPU (:func:`recipes.common.loading.step_loader`)."""
        return step_loader(self.dataset, batch_size=batch_size, total_steps=total_steps, start_step=start_step,
                           seed=seed, ctx=ctx, num_workers=self.config.num_workers)

    def to(self, device: torch.device) -> "ClipData":
        """Move the audio transform (mel tables, vocoder) to ``device``: :meth:`model_inputs`
        then works on batches there."""
        self.audio.to(device)
        return self

    def held_out(self, num_clips: int) -> Dataset:
        """Evaluation clips: a synthetic set drawn with another seed, or the folder itself."""
        if self.config.folder is not None:
            return self.dataset
        return self._synthetic(num_clips, self.config.seed + HELD_OUT_SEED_OFFSET)

    def held_out_batch(self, num_clips: int) -> dict[str, torch.Tensor]:
        """The first ``num_clips`` evaluation clips, collated into one batch."""
        clips = self.held_out(num_clips)
        return torch.utils.data.default_collate([clips[i] for i in range(min(num_clips, len(clips)))])

    def model_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(video b 3 t h w, normalised audio frames b 1 t f w, labels b)`` from a collated batch."""
        video = batch["video"]
        label = batch.get("label", torch.zeros(video.shape[0], dtype=torch.long, device=video.device))
        return video, self.audio.encode(batch["audio"]), torch.as_tensor(label)

    def waveform(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised audio frames ``b 1 t f w`` -> waveform ``b n`` (``n = t * sr / fps``)."""
        return self.audio.decode(frames)
