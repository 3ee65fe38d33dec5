"""Metrics: audio-visual alignment (onsets, bounces, sync score)."""

from avblocks.metrics.sync import (
    EventMatch,
    SyncReport,
    av_sync_score,
    batch_sync_score,
    clip_sync_score,
    detect_audio_onsets,
    detect_bounces,
    match_events,
    object_track,
    pooled_sync_score,
)

__all__ = [
    "EventMatch",
    "SyncReport",
    "av_sync_score",
    "batch_sync_score",
    "clip_sync_score",
    "detect_audio_onsets",
    "detect_bounces",
    "match_events",
    "object_track",
    "pooled_sync_score",
]
