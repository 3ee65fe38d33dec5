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

``mel: hifigan`` takes every mel setting from :meth:`MelConfig.hifigan` (the mel the released
HiFi-GAN weights were trained on); ``sample_rate``, ``n_fft``, ``hop`` and ``n_mels`` must then
say 22050, 1024, 256 and 80 (checked, so a config never reads as something it is not), and
``fps`` must be ``22050 / (256 w)`` for a whole ``w`` (``"11025/1024"`` for 8 columns per frame,
``"11025/1408"`` for 11). ``vocoder`` names a local vocos or HiFi-GAN folder (or a HiFi-GAN
checkpoint next to its ``config.json``; :func:`avblocks.audio.load_vocoder`): the real vocoder
that turns generated mels into sound, instead of Griffin-Lim; its mel must equal the data's.
"""

from dataclasses import dataclass
from fractions import Fraction

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from avblocks.audio import MelConfig, load_vocoder
from avblocks.codecs import AudioFrames
from avblocks.data import SyntheticSoundingVideo, VideoFolder
from avblocks.spec import AVSpec
from recipes.common.distributed import DistContext
from recipes.common.loading import ONE_PROCESS, step_loader

__all__ = ["DataConfig", "ClipData", "Preloaded", "HELD_OUT_SEED_OFFSET"]

HELD_OUT_SEED_OFFSET = 10_000
"""The synthetic held-out clips are drawn with ``data.seed + HELD_OUT_SEED_OFFSET``."""


@dataclass
class DataConfig:
    folder: str | None = None  # a folder of videos; None: the built-in synthetic set
    stride: float | None = None  # folder: seconds between clip starts (None: the clip length)
    held_out: float = 0.0  # folder: share held out for evaluation (0: evaluate on the training clips)
    held_out_by: str = "file"  # folder: "file" (whole files) or "time" (the tail of every file)
    preload: bool = False  # folder: decode every training clip once at the start and keep it in memory
    num_clips: int = 512  # synthetic set size
    num_classes: int = 4  # synthetic classes (a folder: one per subfolder, avblocks.data.folder_layout)
    seed: int = 0
    num_frames: int = 16
    size: int = 32
    fps: Fraction = Fraction(8)
    sample_rate: int = 16000
    n_fft: int = 800
    hop: int = 200
    n_mels: int = 64
    mel: str = "default"  # "default": the fields above; "hifigan": MelConfig.hifigan (module doc)
    vocoder: str | None = None  # a local vocos or HiFi-GAN folder; None: Griffin-Lim
    num_workers: int = 0  # data-loader processes decoding clips while the model trains (0: none)

    def mel_config(self) -> MelConfig:
        """The log-mel settings: the four fields above, or the named preset (which they must match)."""
        if self.mel == "default":
            return MelConfig(sample_rate=self.sample_rate, n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels)
        if self.mel != "hifigan":
            raise ValueError(f"data.mel ({self.mel!r}) must be 'default' or 'hifigan'")
        preset = MelConfig.hifigan()
        wrong = [f"data.{name} ({getattr(self, name)}) != {getattr(preset, field)}"
                 for name, field in (("sample_rate", "sample_rate"), ("n_fft", "n_fft"), ("hop", "hop"),
                                     ("n_mels", "n_mels")) if getattr(self, name) != getattr(preset, field)]
        if wrong:
            raise ValueError(f"data.mel=hifigan fixes the mel settings: {'; '.join(wrong)}")
        return preset

    def spec(self) -> AVSpec:
        """The clips this section describes, as the library's :class:`AVSpec`."""
        return AVSpec(fps=self.fps, sample_rate=self.sample_rate, num_frames=self.num_frames,
                      size=(self.size, self.size), mel=self.mel_config())


class Preloaded(Dataset):
    """Every item of ``source`` read once, in order, and kept in memory (``data.preload``: a
    folder's clips cost one decode each instead of one per epoch)."""

    def __init__(self, source: Dataset):
        self.items = [source[i] for i in tqdm(range(len(source)), desc="preloading clips", mininterval=5)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class ClipData:
    """The dataset a config names, and its clips as model inputs.

    ``audio`` (:class:`~avblocks.codecs.AudioFrames`) turns waveforms into the normalised
    video-like audio models see and back; its inverse is Griffin-Lim, or the vocos or HiFi-GAN
    folder ``data.vocoder`` names.
    """

    def __init__(self, config: DataConfig):
        self.config = config
        self.spec = config.spec()
        self.folder: VideoFolder | None = None
        if config.folder is None:
            self.dataset: Dataset = self._synthetic(config.num_clips, config.seed)
            self.num_classes = config.num_classes
        else:
            self.folder = self._folder("train" if config.held_out else "all")
            self.dataset = Preloaded(self.folder) if config.preload else self.folder
            self.num_classes = len(self.folder.classes)
        inverse = load_vocoder(config.vocoder) if config.vocoder else None
        self.audio = AudioFrames(self.spec, inverse)

    def _synthetic(self, num_clips: int, seed: int) -> SyntheticSoundingVideo:
        return SyntheticSoundingVideo.from_spec(self.spec, num_clips=num_clips,
                                                num_classes=self.config.num_classes, seed=seed)

    def _folder(self, split: str) -> VideoFolder:
        """The folder's clips on one side of the split; held-out clips never overlap each other
        (each second is scored once), training clips start every ``data.stride`` seconds."""
        c = self.config
        return VideoFolder(c.folder, num_frames=c.num_frames, fps=self.spec.fps, size=self.spec.size,
                           sample_rate=c.sample_rate, stride=None if split == "held_out" else c.stride,
                           split=split, held_out=c.held_out, held_out_by=c.held_out_by)

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
        """Evaluation clips: a synthetic set drawn with another seed, the folder's held-out side
        (``data.held_out > 0``), or the folder itself."""
        if self.config.folder is not None:
            return self._folder("held_out") if self.config.held_out else self.dataset
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
