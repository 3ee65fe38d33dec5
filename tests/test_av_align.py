"""AV-Align: the optical flow against known displacements (and OpenCV's Farneback), the IoU on
hand-made peak lists, a flash + beep pair shifted and not, and real / shuffled / shifted
synthetic clips (the score must fall as the shift grows)."""

import math
from fractions import Fraction

import pytest
import torch

from avblocks.data import SyntheticSoundingVideo
from avblocks.metrics import clip_av_align, flow_magnitudes, optical_flow, pooled_av_align
from avblocks.metrics.av_align import av_align_iou, video_peak_times

SR, FPS = 16000, 8
SPF = SR // FPS


def _blob(cx: float, cy: float, size: int = 32, sigma: float = 3.0) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    g = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    return (2 * g - 1).expand(3, size, size).clone()


@pytest.mark.parametrize("flow", ["lucas_kanade", "farneback"])
@pytest.mark.parametrize("shift", [(1.0, -0.5), (3.0, 2.0), (6.0, -4.0)])
def test_flow_recovers_a_known_displacement(flow, shift):
    if flow == "farneback":
        pytest.importorskip("cv2")
    dx, dy = shift
    f = optical_flow(_blob(14, 16), _blob(14 + dx, 16 + dy), flow=flow)
    assert f.shape == (2, 32, 32)
    centre = f[:, 12:20, 10:18].mean(dim=(1, 2))  # on the blob
    torch.testing.assert_close(centre, torch.tensor([dx, dy]), atol=0.1, rtol=0.02)


def test_iou_on_hand_made_peaks():
    f = Fraction
    # audio 1.0, 2.0, 3.0 s; video 1.1 (within 1/8 s of 1.0), 2.5 (too far), 3.0: 2 matched of 3 + 3 - 2.
    assert av_align_iou([1.0, 2.0, 3.0], [1.1, 2.5, 3.0], FPS) == (2, 3, 3)
    # The window is one frame, inclusive: 1/8 s apart still matches, 1/8 s + 1 ms does not.
    assert av_align_iou([f(1)], [f(9, 8)], FPS)[0] == 1
    assert av_align_iou([1.0], [1.126], FPS)[0] == 0
    # One to one: two audio peaks near one video peak match once.
    assert av_align_iou([1.0, 1.05], [1.0], FPS) == (1, 2, 1)
    m = torch.tensor([0.0, 0.0, 2.0, 1.0, 1.0, 3.0, 3.0, 1.0])  # plateau at 5-6 is no strict peak
    assert video_peak_times(m, FPS) == [f(2, 8)]


def _flash_beep(events: list[int], frames: int = 16, size: int = 32, delay: int = 0):
    """A bright square that appears at a new place at each event frame (and stays until the next),
    and a beep starting ``delay`` frames after each event (circularly)."""
    video = -torch.ones(3, frames, size, size)
    places = [(4, 4), (18, 6), (8, 20), (20, 20), (12, 10)]
    for n, k in enumerate(events):
        y, x = places[n % len(places)]
        end = events[n + 1] if n + 1 < len(events) else frames
        video[:, k:end] = -1
        video[:, k:end, y : y + 8, x : x + 8] = 1.0
    audio = torch.randn(frames * SPF, generator=torch.Generator().manual_seed(0)) * 0.002
    tau = torch.arange(1200) / SR
    for k in events:
        start = ((k + delay) % frames) * SPF
        n = min(1200, frames * SPF - start)
        audio[start : start + n] += 0.6 * torch.exp(-tau[:n] / 0.02) * torch.sin(2 * math.pi * 880 * tau[:n])
    return video, audio


@pytest.mark.parametrize("flow", ["lucas_kanade", "farneback"])
def test_flash_and_beep_aligned_then_shifted(flow):
    if flow == "farneback":
        pytest.importorskip("cv2")
    events = [3, 7, 12]
    video, audio = _flash_beep(events)
    peaks = [int(t * FPS) for t in video_peak_times(flow_magnitudes(video, flow=flow), FPS)]
    assert peaks == events
    aligned = clip_av_align(video, audio, SR, FPS, flow=flow)
    assert aligned == {"score": 1.0, "matched": 3, "audio_peaks": 3, "video_peaks": 3}
    # One frame late is still inside AV-Align's one-frame window; two frames is not.
    assert clip_av_align(video, _flash_beep(events, delay=1)[1], SR, FPS, flow=flow)["score"] == 1.0
    assert clip_av_align(video, _flash_beep(events, delay=2)[1], SR, FPS, flow=flow)["score"] == 0.0
    # a beep missing: 2 matched of 2 + 3 - 2
    assert clip_av_align(video, _flash_beep([3, 7])[1], SR, FPS, flow=flow)["score"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def clips():
    data = SyntheticSoundingVideo(num_clips=24, seed=10_000)
    return (torch.stack([data[i]["video"] for i in range(24)]), torch.stack([data[i]["audio"] for i in range(24)]))


def test_real_clips_beat_shuffled_and_the_score_falls_with_the_shift(clips):
    video, audio = clips
    real = pooled_av_align(video, audio, SR, FPS)
    shuffled = pooled_av_align(video, audio.roll(1, dims=0), SR, FPS)
    shifted = [pooled_av_align(video, audio.roll(k * SPF, dims=-1), SR, FPS)["pooled"] for k in (2, 3, 4)]
    assert real["pooled"] > 0.7 and real["mean"] > 0.7
    assert shuffled["pooled"] < real["pooled"] - 0.15
    assert real["pooled"] > shifted[0] > shifted[1] and shifted[1] < 0.3


def test_farneback_orders_real_shuffled_and_shifted_the_same_way(clips):
    """OpenCV's Farneback (the reference's flow) ranks the pairs as the torch flow does; on
    32-pixel frames its 15-pixel window smears the object's motion, so its scores are lower."""
    pytest.importorskip("cv2")
    video, audio = clips
    scores = {name: pooled_av_align(video, a, SR, FPS, flow="farneback")["pooled"]
              for name, a in [("real", audio), ("shuffled", audio.roll(1, dims=0)),
                              ("shifted", audio.roll(3 * SPF, dims=-1))]}
    assert scores["real"] > scores["shuffled"] + 0.1 and scores["real"] > scores["shifted"] + 0.2
    assert pooled_av_align(video, audio, SR, FPS)["pooled"] > scores["real"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="flow .'raft'. must be one of"):
        flow_magnitudes(torch.zeros(3, 4, 8, 8), flow="raft")
    with pytest.raises(ValueError, match="at least 2 frames"):
        flow_magnitudes(torch.zeros(3, 1, 8, 8))
