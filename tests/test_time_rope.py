"""Rotary positions on seconds and the time masks: scores depend on time differences only,
one frequency table for both streams, the rate scale is Ovi's index scaling, the window mask
is the rule it states."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.attention.masks import RandomShiftMask
from avblocks.attention.positional import rotary_angles
from avblocks.attention.time_masks import TimeWindowMask, TransposedMask
from avblocks.attention.time_rope import TimeRotary


def _scores(rotary, q, k, tq, tk):
    return torch.einsum("bhqd,bhkd->bhqk", rotary(q, tq), rotary(k, tk))


@given(shift=st.floats(-100, 100, allow_nan=False), scale=st.floats(0.5, 50))
def test_scores_depend_only_on_the_time_difference(shift, scale):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 5, 16, generator=g), torch.randn(1, 2, 7, 16, generator=g)
    tq, tk = torch.rand(5, generator=g) * 2, torch.rand(7, generator=g) * 2
    rotary = TimeRotary(scale=scale)
    torch.testing.assert_close(_scores(rotary, q, k, tq + shift, tk + shift), _scores(rotary, q, k, tq, tk),
                               atol=2e-3 * max(1.0, abs(shift) * scale / 100), rtol=1e-3)


def test_tokens_at_the_same_instant_score_as_unrotated():
    q, k = torch.randn(2, 1, 4, 8), torch.randn(2, 1, 4, 8)
    times = torch.tensor([0.1, 0.7, 1.3, 2.9])
    rotary = TimeRotary(scale=8.0)
    same = torch.einsum("bhnd,bhnd->bhn", rotary(q, times), rotary(k, times))
    torch.testing.assert_close(same, torch.einsum("bhnd,bhnd->bhn", q, k), atol=1e-5, rtol=1e-5)
    # a video token and an audio token at one instant get one phase: one table for both streams
    assert torch.equal(rotary.angles(8, torch.tensor([0.5])), rotary.angles(8, torch.tensor([0.5])))


def test_the_rate_scale_is_ovis_index_scaling():
    """Audio index j at rate ra, scaled to the video rate rv, is the position j * rv / ra:
    the angle of the time j / ra under scale rv."""
    rv, ra = 8.0, 40.0
    j = torch.arange(12, dtype=torch.float32)
    scaled_index = rotary_angles(16, (j * rv / ra)[:, None])
    torch.testing.assert_close(TimeRotary(scale=rv).angles(16, j / ra), scaled_index)
    # and the angle itself is seconds * scale * base^(-2i/d)
    angles = TimeRotary(scale=rv).angles(16, torch.tensor([0.25]))
    assert float(angles[0, 3]) == pytest.approx(0.25 * rv * 10000 ** (-6 / 16), rel=1e-6)


def test_time_rotary_refuses_bad_settings():
    with pytest.raises(ValueError, match="scale > 0"):
        TimeRotary(scale=0.0)
    with pytest.raises(ValueError, match=r"head_dim \(5\) must be even"):
        TimeRotary().angles(5, torch.zeros(3))


def test_the_window_mask_is_the_rule_it_states():
    tq, tk = torch.tensor([0.0625, 0.1875, 0.3125]), (torch.arange(12) + 0.5) / 40
    mask = TimeWindowMask(tq, tk, 0.09)
    expected = (tq[:, None].double() - tk[None, :].double()).abs() <= 0.09
    assert torch.equal(mask.dense(), expected)
    assert mask == TimeWindowMask(tq.clone(), tk.clone(), 0.09) and mask != TimeWindowMask(tq, tk, 0.2)
    assert TimeWindowMask(tq, tk, 10.0).is_full and not mask.is_full
    assert torch.equal(TransposedMask(mask).dense(), expected.T)
    with pytest.raises(ValueError, match="query 2 sees no key"):
        TimeWindowMask(torch.tensor([0.0, 0.1, 5.0]), tk, 0.09)
    with pytest.raises(ValueError, match="non-empty 1-D float"):
        TimeWindowMask(torch.arange(3), tk, 0.1)


def test_a_transposed_random_shift_mask_sees_the_same_pairs():
    mask = RandomShiftMask(4, 3, 20, 1, shift=2, window=6)
    assert torch.equal(TransposedMask(mask).dense(), mask.dense().T)
    with pytest.raises(ValueError, match="no query of"):  # windows too narrow to cover every audio frame
        TransposedMask(RandomShiftMask(4, 3, 20, 1, shift=0, window=2))
    assert math.isclose(TransposedMask(mask).density, mask.density)
