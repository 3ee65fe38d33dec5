"""Evaluate generated sounding video (every recipe that samples reports these): AV-sync
against real and shuffled clips, and Fréchet / kernel distances of features.

AV-sync (the synthetic set's alignment score): the fraction of audio onsets that have a
visual bounce within one frame (:func:`avblocks.metrics.batch_sync_score`), for generated
clips, next to the same score for real clips and for real clips with their audio shuffled
across the batch (audio of clip ``i`` with the video of clip ``i + 1``): the chance level of
a generator whose modalities are plausible but unsynchronised. The reverse score (bounces with
an onset nearby) is reported too, since the forward score alone rewards a video that bounces
all the time.

Distances: with a feature extractor (``video_features(video) -> b d``,
``audio_features(waveform, sample_rate) -> b d``), the Fréchet distance and the polynomial
kernel distance between real and generated features, per modality (the formulas of
FVD/KVD and FAD; the numbers are comparable only for the same extractor).
"""

from fractions import Fraction

import torch

from avblocks.metrics import batch_sync_score, frechet_distance, kernel_distance
from avblocks.metrics.features import extract_audio_features, extract_video_features


def sync_scores(video: torch.Tensor, waveform: torch.Tensor, sample_rate: int, fps: "int | Fraction") -> dict:
    report = batch_sync_score(video, waveform, sample_rate, fps)
    return {"score": report.score, "reverse": report.reverse_score,
            "onsets": sum(len(o) for o in report.onset_frames),
            "bounces": sum(len(b) for b in report.bounce_frames)}


def generation_metrics(generated_video: torch.Tensor, generated_wave: torch.Tensor,
                       real_video: torch.Tensor, real_wave: torch.Tensor, *, sample_rate: int, fps: "int | Fraction",
                       features=None) -> dict:
    """Metrics of ``b`` generated clips against ``m`` real clips (``m >= 2``)."""
    shuffled_wave = real_wave.roll(1, dims=0)
    metrics = {
        "sync_generated": sync_scores(generated_video, generated_wave, sample_rate, fps),
        "sync_real": sync_scores(real_video, real_wave, sample_rate, fps),
        "sync_shuffled": sync_scores(real_video, shuffled_wave, sample_rate, fps),
    }
    if features is not None:
        subset = dict(subset_size=min(len(real_video), len(generated_video)), num_subsets=10)
        # on the extractor's device, features back on the CPU
        real_v, fake_v = (extract_video_features(features, v) for v in (real_video, generated_video))
        real_a, fake_a = (extract_audio_features(features, a, sample_rate) for a in (real_wave, generated_wave))
        metrics["video_frechet"] = frechet_distance(real_v, fake_v)
        metrics["video_kernel"] = kernel_distance(real_v, fake_v, **subset)
        metrics["audio_frechet"] = frechet_distance(real_a, fake_a)
        metrics["audio_kernel"] = kernel_distance(real_a, fake_a, **subset)
    return metrics
