"""PlaneStack: six planes of different sizes <-> one ``b c 6 s s`` latent, bit-exactly."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.dit.plane_stack import PLANE_ORDER, PlaneStack

_shape = st.tuples(st.integers(1, 12), st.integers(1, 12))


@given(
    shapes=st.lists(_shape, min_size=6, max_size=6),
    channels=st.integers(1, 3),
    batch=st.integers(1, 2),
    multiple=st.integers(1, 4),
    extra=st.integers(0, 3),
)
def test_round_trip_exact_and_layout(shapes, channels, batch, multiple, extra):
    largest = max(max(s) for s in shapes)
    default = PlaneStack(shapes=shapes, channels=channels, multiple=multiple)
    assert default.side % multiple == 0 and largest <= default.side < largest + multiple
    stack = PlaneStack(shapes=shapes, channels=channels, side=largest + extra)
    planes = [torch.randn(batch, channels, *s) for s in shapes]
    latent = stack.stack(planes)
    s = largest + extra
    assert latent.shape == (batch, channels, 6, s, s)
    back = stack.unstack(latent)
    assert len(back) == 6
    for plane, got in zip(planes, back, strict=True):
        assert torch.equal(plane, got)  # bit-identical
        assert got.is_contiguous()
    # top-left placement, zeros elsewhere, and the mask marks exactly the real cells
    for i, (rows, cols) in enumerate(shapes):
        assert torch.equal(latent[:, :, i, :rows, :cols], planes[i])
    mask = stack.valid_mask
    assert mask.shape == (6, s, s) and mask.dtype == torch.bool
    assert int(mask.sum()) == sum(r * c for r, c in shapes)
    assert torch.all(latent.masked_select(~mask.expand_as(latent)) == 0)


def test_unstack_crops_ignore_padding_values():
    stack = PlaneStack(shapes=[(2, 3), (3, 1)], channels=1)
    latent = torch.full((1, 1, 2, 3, 3), 7.0)
    first, second = stack.unstack(latent)
    assert first.shape == (1, 1, 2, 3) and second.shape == (1, 1, 3, 1)
    first[...] = 0  # a copy: the latent is untouched
    assert torch.all(latent == 7.0)


def test_for_av_plane_order_and_sizes():
    stack = PlaneStack.for_av(video_thw=(4, 8, 6), audio_tfw=(4, 10, 3), channels=2, multiple=4)
    assert stack.shapes == ((8, 6), (4, 8), (4, 6), (10, 3), (4, 10), (4, 3))
    assert stack.side == 12
    assert PLANE_ORDER == ("video_hw", "video_th", "video_tw", "audio_hw", "audio_th", "audio_tw")


def test_token_mask_matches_cell_loop():
    stack = PlaneStack(shapes=[(3, 4), (1, 1), (4, 2)], channels=1, side=4)
    tokens = stack.token_mask(2)
    assert tokens.shape == (3, 4)
    for plane, (rows, cols) in enumerate(stack.shapes):
        for token in range(4):
            r0, c0 = 2 * (token // 2), 2 * (token % 2)
            any_valid = any(r < rows and c < cols for r in (r0, r0 + 1) for c in (c0, c0 + 1))
            assert bool(tokens[plane, token]) == any_valid
    with pytest.raises(ValueError, match=r"side \(4\) is not divisible by patch size \(3, 3\)"):
        stack.token_mask(3)


def test_errors_name_values():
    stack = PlaneStack(shapes=[(2, 2)] * 6, channels=3)
    planes = [torch.randn(1, 3, 2, 2) for _ in range(6)]
    planes[4] = torch.randn(1, 5, 2, 2)
    with pytest.raises(ValueError, match=r"audio_th has 5 channels, expected 3.*\[3, 3, 3, 3, 5, 3\]"):
        stack.stack(planes)
    planes[4] = torch.randn(1, 3, 2, 3)
    with pytest.raises(ValueError, match=r"audio_th is \(2, 3\), expected \(2, 2\)"):
        stack.stack(planes)
    with pytest.raises(ValueError, match="expected 6 planes"):
        stack.stack(planes[:5])
    with pytest.raises(ValueError, match=r"side \(3\) is smaller than .* \(5\)"):
        PlaneStack(shapes=[(5, 1)], channels=1, side=3)
    with pytest.raises(ValueError, match=r"channels \(0\)"):
        PlaneStack(shapes=[(1, 1)], channels=0)
    with pytest.raises(ValueError, match=r"latent \(1, 3, 6, 3, 3\) does not match"):
        stack.unstack(torch.randn(1, 3, 6, 3, 3))


def test_stack_is_differentiable_and_mask_follows_device_moves():
    stack = PlaneStack(shapes=[(2, 3), (3, 2)], channels=1)
    planes = [torch.randn(1, 1, 2, 3, requires_grad=True), torch.randn(1, 1, 3, 2, requires_grad=True)]
    stack.stack(planes).sum().backward()
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in planes)
    assert "valid_mask" not in stack.state_dict()  # derived from the shapes, not a weight
    assert stack.to(torch.float64).valid_mask.dtype == torch.bool
