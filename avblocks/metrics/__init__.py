"""Metrics: audio-visual alignment (event F1, AV-Align, the AV-sync score), picture integrity,
a slot for learned sync models, reconstruction quality, distribution distances."""

from avblocks.metrics.av_align import clip_av_align, flow_magnitudes, optical_flow, pooled_av_align
from avblocks.metrics.distribution import frechet_distance, gaussian_stats, kernel_distance
from avblocks.metrics.events import (
    EventCounts,
    event_counts,
    match_one_to_one,
    onset_count_ratio,
    onset_timing_errors,
    pooled_event_counts,
)
from avblocks.metrics.features import (
    FeatureExtractor,
    audio_distances,
    distribution_distances,
    extract_audio_features,
    extract_video_features,
    video_distances,
)
from avblocks.metrics.integrity import IntegrityReport, object_integrity
from avblocks.metrics.learned import AVSimilarity, OffsetClassifier
from avblocks.metrics.reconstruction import (
    log_spectral_distance,
    mel_l1,
    power_spectrogram,
    psnr,
    ssim,
    video_psnr,
    video_ssim,
    waveform_lsd,
    waveform_mel_l1,
)
from avblocks.metrics.sync import (
    EventMatch,
    SyncReport,
    av_sync_score,
    batch_sync_score,
    clip_sync_score,
    detect_audio_onsets,
    detect_bounces,
    detect_onset_samples,
    match_events,
    object_track,
    pooled_sync_score,
)
from avblocks.metrics.synthetic_features import SyntheticFeatureNet, SyntheticFeatureNetConfig
from avblocks.metrics.torchscript_features import TorchScriptFeatures

__all__ = [
    "frechet_distance",
    "gaussian_stats",
    "kernel_distance",
    "FeatureExtractor", "SyntheticFeatureNet", "SyntheticFeatureNetConfig", "TorchScriptFeatures", "audio_distances", "distribution_distances", "extract_audio_features", "extract_video_features", "video_distances",
    "psnr",
    "ssim",
    "video_psnr",
    "video_ssim",
    "log_spectral_distance",
    "power_spectrogram",
    "waveform_lsd",
    "mel_l1",
    "waveform_mel_l1",
    "EventMatch",
    "SyncReport",
    "av_sync_score",
    "batch_sync_score",
    "clip_sync_score",
    "detect_audio_onsets",
    "detect_bounces",
    "detect_onset_samples",
    "match_events",
    "object_track",
    "pooled_sync_score",
    "EventCounts",
    "event_counts",
    "pooled_event_counts",
    "match_one_to_one",
    "onset_timing_errors",
    "onset_count_ratio",
    "optical_flow",
    "flow_magnitudes",
    "clip_av_align",
    "pooled_av_align",
    "IntegrityReport",
    "object_integrity",
    "OffsetClassifier",
    "AVSimilarity",
]
