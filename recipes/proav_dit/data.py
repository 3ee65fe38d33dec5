"""The data side of every ProAV-DiT entry point: clips in, model inputs out, and back.

A clip is a video ``3 t h w`` in [-1, 1] and its mono waveform. The model sees the video and
the *video-like audio*: the waveform's log-mel cut into one frame per video frame
(:class:`avblocks.audio.VideoLikeAudio`), normalised to about [-1, 1]
(:class:`avblocks.audio.LogMelNormalizer`). Generated audio frames go back to a waveform by
concatenating the frames into one spectrogram and inverting it (Griffin-Lim, or a vocos
vocoder from a local folder).

Default audio features for the tiny preset: 16 kHz, n_fft 800, hop 200 (80 columns per
second, so 10 columns per frame at 8 fps), 64 mel bins.
"""

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from avblocks.audio import GriffinLim, LogMelNormalizer, MelConfig, VideoLikeAudio, Vocoder
from avblocks.data import SyntheticSoundingVideo
from avblocks.data.folder import VideoFolder
from recipes.common import StepBatchSampler


@dataclass
class DataConfig:
    folder: str | None = None  # a folder of videos; None: the built-in synthetic set
    num_clips: int = 512  # synthetic set size
    num_classes: int = 4  # synthetic classes (a folder is one class)
    seed: int = 0
    num_frames: int = 16
    size: int = 32
    fps: int = 8
    sample_rate: int = 16000
    n_fft: int = 800
    hop: int = 200
    n_mels: int = 64
    vocoder: str | None = None  # a local vocos folder (config.yaml + weights); None: Griffin-Lim


class AVData:
    """Builds the dataset and converts between clips and model inputs."""

    def __init__(self, config: DataConfig):
        self.config = config
        c = config
        if c.folder is None:
            self.dataset: Dataset = self._synthetic(c.num_clips, c.seed)
            self.num_classes = c.num_classes
        else:
            self.dataset = VideoFolder(c.folder, num_frames=c.num_frames, fps=c.fps, size=(c.size, c.size),
                                       sample_rate=c.sample_rate)
            self.num_classes = 1
        self.mel = MelConfig(sample_rate=c.sample_rate, n_fft=c.n_fft, hop=c.hop, n_mels=c.n_mels)
        self.frames = VideoLikeAudio(mel=self.mel, fps=c.fps)
        self.normalizer = LogMelNormalizer(mel=self.mel)
        self._inverse = None

    def loader(self, *, batch_size: int, total_steps: int, start_step: int = 0, seed: int = 0) -> DataLoader:
        sampler = StepBatchSampler(num_items=len(self.dataset), batch_size=batch_size,
                                   total_steps=total_steps, seed=seed, start_step=start_step)
        # A loader's iterator draws its base seed from this generator; from the global RNG it
        # would shift the stream that a resumed run restores, and resume would not be exact.
        return DataLoader(self.dataset, batch_sampler=sampler, generator=torch.Generator().manual_seed(seed))

    def _synthetic(self, num_clips: int, seed: int) -> SyntheticSoundingVideo:
        c = self.config
        return SyntheticSoundingVideo(num_clips=num_clips, num_frames=c.num_frames, size=c.size, fps=c.fps,
                                      sample_rate=c.sample_rate, num_classes=c.num_classes, seed=seed)

    def held_out(self, num_clips: int) -> Dataset:
        """Evaluation clips: a synthetic set drawn with another seed, or the folder itself."""
        if self.config.folder is not None:
            return self.dataset
        return self._synthetic(num_clips, self.config.seed + 10_000)

    def held_out_batch(self, num_clips: int) -> dict[str, torch.Tensor]:
        """The first ``num_clips`` evaluation clips, collated into one batch."""
        clips = self.held_out(num_clips)
        return torch.utils.data.default_collate([clips[i] for i in range(num_clips)])

    def model_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(video b 3 t h w, audio frames b 1 t f w, label b)`` from a collated batch."""
        video, waveform = batch["video"], batch["audio"]
        if waveform.dim() == 3:  # VideoFolder: b ch n
            waveform = waveform.mean(dim=1)
        audio = self.normalizer.normalize(self.frames(waveform))
        label = batch.get("label", torch.zeros(video.shape[0], dtype=torch.long))
        return video, audio, torch.as_tensor(label)

    def inverse(self):
        if self._inverse is None:
            vocoder = self.config.vocoder
            self._inverse = Vocoder.from_dir(vocoder) if vocoder else GriffinLim(mel=self.mel)
        return self._inverse

    @torch.no_grad()
    def waveform(self, audio_frames: torch.Tensor) -> torch.Tensor:
        """Normalised audio frames ``b 1 t f w`` -> waveform ``b n`` (``n = t * sr / fps``)."""
        log_mel = self.frames.to_spectrogram(self.normalizer.denormalize(audio_frames))[:, 0]
        wave = self.inverse().decode(log_mel, self.mel)
        n = audio_frames.shape[2] * self.frames.samples_per_frame
        wave = wave[..., :n]
        return torch.nn.functional.pad(wave, (0, n - wave.shape[-1])).clamp(-1, 1)
