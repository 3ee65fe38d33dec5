"""Mixed frame noise (avblocks.diffusion.frame_noise): unit variance everywhere, correlation
``share`` between video frames and none elsewhere, plain randn at share 0, clear errors."""

import pytest
import torch

from avblocks.diffusion.frame_noise import mixed_frame_noise


def test_share_zero_is_plain_randn_with_the_same_numbers():
    a = mixed_frame_noise((2, 3, 5, 4, 4), frames=3, share=0.0, generator=torch.Generator().manual_seed(7))
    b = torch.randn((2, 3, 5, 4, 4), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_frames_correlate_by_share_and_the_rest_is_independent():
    share = 0.6
    n = mixed_frame_noise((20000, 2, 5, 2, 2), frames=3, share=share, generator=torch.Generator().manual_seed(0))
    rows = n.transpose(0, 2).reshape(5, -1)  # one row per entry of axis 2
    corr = torch.corrcoef(rows)
    expected = torch.eye(5)
    expected[:3, :3] = share
    expected.fill_diagonal_(1.0)
    torch.testing.assert_close(corr, expected, atol=0.015, rtol=0)  # 80000 samples: std ~0.0035
    torch.testing.assert_close(rows.std(dim=1), torch.ones(5), atol=0.015, rtol=0)
    # the shared part is one draw per clip and position: frame differences carry only 1 - share
    diff = (n[:, :, 0] - n[:, :, 1]).var()
    assert abs(float(diff) - 2 * (1 - share)) < 0.03


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"share \(1.0\)"):
        mixed_frame_noise((1, 1, 4), frames=2, share=1.0)
    with pytest.raises(ValueError, match=r"frames \(5\)"):
        mixed_frame_noise((1, 1, 4), frames=5, share=0.5)
    with pytest.raises(ValueError, match=r"dim \(3\)"):
        mixed_frame_noise((1, 1, 4), frames=2, share=0.5, dim=3)
