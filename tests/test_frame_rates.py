"""Any frame rate, exactly: the frame-selection rule of the readers on real files of every
source rate and container, and fractional rates through the writer, the reader and the
timestamps of the mp4 the writer makes.

The rule (avblocks/data/media.py): clip frame ``j`` at ``fps`` owns ``[j / fps, (j + 1) / fps)``
and shows the source frame displayed at the MIDDLE of that interval.
"""

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from media_factory import FORMATS, decode_index, index_colors, make_media

from avblocks.data import read_clip, write_mp4
from avblocks.data.media import frame_times
from avblocks.data.single_stream import read_video

SOURCE_RATES = [Fraction(10), Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001),
                Fraction(30), Fraction(50), Fraction(60)]
READ_RATES = [Fraction(8), Fraction(24), Fraction(25), Fraction(30)]
SR = 16000
EDGE = Fraction(1, 1000)  # mkv/webm store 1 ms timestamps: a middle this close to an edge may go either way
CODEC_SMEAR = 0.003  # seconds of AAC/Opus pre-echo and ringing at the beep's edges


def _beep_span(audio: np.ndarray) -> tuple[float, float]:
    """First and last sample (seconds) where the 0.8-amplitude beep is above half its level."""
    loud = np.flatnonzero(np.abs(audio) > 0.4)
    return loud[0] / SR, (loud[-1] + 1) / SR


@pytest.mark.parametrize("ext", sorted(FORMATS))
@pytest.mark.parametrize("source_fps", SOURCE_RATES, ids=lambda f: f"{float(f):g}fps")
def test_flash_and_beep_stay_aligned_at_every_read_rate(tmp_path, ext, source_fps):
    """A flash and a beep over the same source frames [k, k + m): read at 8, 24, 25 and 30 fps,
    the clip frames showing the flash are exactly those whose middle lies in the event (the
    rule), the beep sits at the event's time in the clip's audio, so every frame that shows
    the flash has the beep sounding at its middle and every frame whose middle hears the beep
    shows the flash. (Showing the frame at the START of each clip frame's interval instead,
    24 fps read at 25 shows the flash one frame after the one holding the beep's onset.)"""
    m = math.ceil(source_fps / 8)  # the event lasts at least 1/8 s: every read rate sees it
    k = round(Fraction(41, 100) * source_fps)  # starts near 0.41 s, off every read grid
    n = math.ceil(source_fps)  # one second of source
    path = make_media(tmp_path / f"event.{ext}", fps=source_fps, sample_rate=SR, num_frames=n,
                      size=(16, 16), flash=k, beep_t=k / source_fps, event_frames=m)
    on, off = k / source_fps, (k + m) / source_fps
    for fps in READ_RATES:
        frames = math.floor(Fraction(9, 10) * fps)
        clip = read_clip(path, num_frames=frames, fps=fps, sample_rate=SR)
        shown = (clip.video.mean(dim=(0, 2, 3)) > 0).numpy()
        middles = [(j + Fraction(1, 2)) / fps for j in range(frames)]  # by hand, not frame_times
        inside = np.array([on + EDGE <= t < off - EDGE for t in middles])
        outside = np.array([t < on - EDGE or t >= off + EDGE for t in middles])
        assert shown[inside].all() and not shown[outside].any(), (fps, shown, inside, outside)
        assert inside.any(), f"the event is visible at {fps} fps"
        heard_on, heard_off = _beep_span(clip.audio[0].numpy())
        assert abs(heard_on - on) < CODEC_SMEAR and abs(heard_off - off) < CODEC_SMEAR, (fps, heard_on, heard_off)
        for j, t in enumerate(middles):  # alignment stated on what the clip holds
            if heard_on + CODEC_SMEAR + EDGE <= t < heard_off - CODEC_SMEAR - EDGE:
                assert shown[j], (fps, j)
            if shown[j]:
                assert heard_on - CODEC_SMEAR - EDGE <= t < heard_off + CODEC_SMEAR + EDGE, (fps, j)


def test_the_middle_rule_is_what_picks_the_frame():
    """The rule's arithmetic: exact, and at the source's own rate the middle picks frame j."""
    assert frame_times(Fraction(1, 2), 3, Fraction(25)) == [Fraction(1, 2) + Fraction(1, 50),
                                                           Fraction(1, 2) + Fraction(3, 50),
                                                           Fraction(1, 2) + Fraction(5, 50)]
    for fps in SOURCE_RATES:
        assert [math.floor(t * fps) for t in frame_times(Fraction(0), 12, fps)] == list(range(12))


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), Fraction(24000, 1001), Fraction(375, 16),
                                 Fraction(11025, 1408)], ids=str)
def test_fractional_rates_through_writer_timestamps_and_readers(tmp_path, fps):
    """write_mp4 at an exact fractional rate stores frame j at exactly j / fps (the stream's own
    timestamps), and read_clip / read_video at that rate give every frame back in order."""
    n = 24
    colors = torch.tensor(index_colors(n), dtype=torch.uint8)
    video = colors.T[:, :, None, None].expand(3, n, 16, 16).contiguous()
    samples = math.floor(n * 22050 / fps)
    path = write_mp4(tmp_path / "frac.mp4", video, torch.zeros(samples), fps, 22050)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == fps
        times = sorted(f.pts * f.time_base for f in c.decode(stream))
    assert times == [Fraction(j) / fps for j in range(n)]
    clip = read_clip(path, num_frames=n - 1, fps=fps, sample_rate=22050)
    assert decode_index(clip.video).tolist() == list(range(n - 1))
    assert clip.audio.shape[1] == round((n - 1) * 22050 / fps)
    assert decode_index(read_video(path, num_frames=n, fps=fps)).tolist() == list(range(n))
