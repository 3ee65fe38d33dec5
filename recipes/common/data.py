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
from typing import Annotated, Literal

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from avblocks.audio import MelConfig, load_vocoder
from avblocks.codecs import AudioFrames
from avblocks.config import ConfigError
from avblocks.config_rules import (
    CHANGEABLE,
    PROBABILITY,
    SEED,
    at_least,
    existing_dir,
    existing_path,
    in_range,
)
from avblocks.data import DataError, SyntheticSoundingVideo, VideoFolder
from avblocks.data.request_bounds import MAX_FPS, MAX_SAMPLE_RATE
from avblocks.spec import AVSpec
from recipes.common.config import require, require_fits
from recipes.common.distributed import DistContext
from recipes.common.loading import ONE_PROCESS, step_loader

__all__ = ["DataConfig", "ClipData", "Preloaded", "HELD_OUT_SEED_OFFSET", "check_batch", "check_data"]

HELD_OUT_SEED_OFFSET = 10_000
"""The synthetic held-out clips are drawn with ``data.seed + HELD_OUT_SEED_OFFSET``."""


@dataclass
class DataConfig:
    folder: Annotated[str | None, existing_dir] = None  # a folder of videos; None: the built-in synthetic set
    # folder: seconds between clip starts (None: the clip length)
    stride: Annotated[float | None, in_range(0, 1e6, lo_open=True)] = None
    # folder: share held out for evaluation (0: evaluate on the training clips)
    held_out: Annotated[float, in_range(0, 1, hi_open=True)] = 0.0
    held_out_by: Literal["file", "time"] = "file"  # folder: whole files, or the tail of every file
    preload: bool = False  # folder: decode every training clip once at the start and keep it in memory
    num_clips: Annotated[int, at_least(1)] = 512  # synthetic set size
    # synthetic classes (a folder: one per subfolder, avblocks.data.folder_layout)
    num_classes: Annotated[int, at_least(1)] = 4
    seed: Annotated[int, SEED] = 0
    num_frames: Annotated[int, at_least(1)] = 16
    size: Annotated[int, at_least(1)] = 32
    fps: Annotated[Fraction, in_range(0, MAX_FPS, lo_open=True)] = Fraction(8)
    sample_rate: Annotated[int, in_range(1, MAX_SAMPLE_RATE)] = 16000
    n_fft: Annotated[int, at_least(2)] = 800
    hop: Annotated[int, at_least(1)] = 200
    n_mels: Annotated[int, at_least(1)] = 64
    # "default": the fields above; "hifigan": MelConfig.hifigan (module doc)
    mel: Literal["default", "hifigan"] = "default"
    # a local vocos or HiFi-GAN folder (or HiFi-GAN checkpoint file); None: Griffin-Lim
    vocoder: Annotated[str | None, existing_path] = None
    # data-loader processes decoding clips while the model trains (0: none)
    num_workers: Annotated[int, in_range(0, 256), CHANGEABLE] = 0
    # data.folder: the run stops once more than this share of its files (or of one batch's
    # clips) failed to read; see avblocks.data.folder
    max_bad_fraction: Annotated[float, PROBABILITY] = 0.05

    def clip_bytes(self) -> int:
        """One clip as float32 tensors: video ``3 t h w``, waveform, its complex STFT and its
        log-mel frames (what memory estimates count a clip as)."""
        samples = int(self.num_frames * self.sample_rate / self.fps)
        columns = samples // self.hop + 1
        stft = 2 * (self.n_fft // 2 + 1) * columns
        return 4 * (3 * self.num_frames * self.size**2 + samples + stft + self.n_mels * columns)

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


def check_data(data: DataConfig) -> None:
    """What the ``data`` fields must satisfy together (each field's own bounds are declared on
    it): a clip the library can describe (mel settings that fit the rates) that fits in
    memory, and, for the synthetic set, one it can draw, with every epoch's shuffled order
    (8 bytes a clip) in memory."""
    fields = (f"data.sample_rate ({data.sample_rate}), data.fps ({data.fps}), data.n_fft ({data.n_fft}), "
              f"data.hop ({data.hop}), data.n_mels ({data.n_mels})")
    try:
        spec = data.spec()
    except ValueError as e:
        raise ConfigError(f"{fields}: {e}") from None
    require_fits(f"one clip of data.num_frames ({data.num_frames}) frames of data.size ({data.size}) squared",
                 data.clip_bytes())
    if data.folder is None:
        require_fits(f"shuffling data.num_clips ({data.num_clips}) synthetic clips", 8 * data.num_clips)
        try:
            SyntheticSoundingVideo.from_spec(spec, num_clips=data.num_clips, num_classes=data.num_classes,
                                             seed=data.seed)
        except ValueError as e:
            raise ConfigError(f"the synthetic set (data.folder is null) cannot make these clips: {e}") from None


def check_batch(batch_size: int, data: DataConfig, key: str = "optim.batch_size", source: str = "data") -> None:
    """A batch the synthetic set of ``data`` can fill (``source`` names where ``data`` comes
    from); a folder's clips are counted once it is indexed."""
    if data.folder is None:
        require(batch_size <= data.num_clips,
                f"{key} ({batch_size}) must be <= {source}.num_clips ({data.num_clips})")


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
                           split=split, held_out=c.held_out, held_out_by=c.held_out_by,
                           max_bad_fraction=c.max_bad_fraction)

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
        """``num_clips`` evaluation clips (fewer when there are fewer): a synthetic set drawn
        with another seed, or the folder's first clips on its held-out side (``data.held_out >
        0``) or of the folder itself."""
        if self.config.folder is not None:
            clips = self._folder("held_out") if self.config.held_out else self.dataset
            return Subset(clips, range(min(num_clips, len(clips))))
        return self._synthetic(num_clips, self.config.seed + HELD_OUT_SEED_OFFSET)

    def held_out_batch(self, num_clips: int) -> dict[str, torch.Tensor]:
        """The first ``num_clips`` evaluation clips, collated into one batch."""
        clips = self.held_out(num_clips)
        return torch.utils.data.default_collate([clips[i] for i in range(min(num_clips, len(clips)))])

    def read_report(self) -> dict[str, int]:
        """This process's read failures of ``data.folder`` for the log (empty when none)."""
        folder = self.folder
        if folder is None or not (folder.failed or folder.substitutions):
            return {}
        return {"bad_files": len(folder.failed), "substituted_clips": folder.substitutions}

    def check_substitutes(self, batch: dict) -> None:
        """Stop (:class:`~avblocks.data.DataError`) when more than ``data.max_bad_fraction`` of
        a batch's clips stand in for clips whose files failed to read."""
        if "substitute" not in batch:
            return
        flags = torch.as_tensor(batch["substitute"])
        bad, total = int(flags.sum()), flags.numel()
        if bad > self.config.max_bad_fraction * total:
            raise DataError(f"{bad} of the {total} clips of a batch stand in for clips whose files in "
                            f"{self.config.folder} failed to read, more than data.max_bad_fraction "
                            f"({self.config.max_bad_fraction}); stopping")

    def model_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(video b 3 t h w, normalised audio frames b 1 t f w, labels b)`` from a collated
        batch, after :meth:`check_substitutes`."""
        self.check_substitutes(batch)
        video = batch["video"]
        label = batch.get("label", torch.zeros(video.shape[0], dtype=torch.long, device=video.device))
        return video, self.audio.encode(batch["audio"]), torch.as_tensor(label)

    def waveform(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised audio frames ``b 1 t f w`` -> waveform ``b n`` (``n = t * sr / fps``)."""
        return self.audio.decode(frames)
