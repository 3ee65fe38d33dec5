"""FrameAudioCodec: one code per latent frame, causal, trainable; frame-level InfoNCE."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from avblocks.audio.frame_codes import CausalConv1d, FrameAudioCodec, frame_infonce


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero weights everywhere (the zero-init convs would hide dependencies)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def small_codec(frames_per_code=1):
    strides = (2, 2) if frames_per_code == 1 else (2, 4)
    return FrameAudioCodec(mel_bins=6, columns_per_frame=4, frames_per_code=frames_per_code,
                           strides=strides, hidden_channels=8, code_dim=5)


@pytest.mark.parametrize("fpc", [1, 2])
def test_one_code_per_latent_frame_and_reconstruction_shape(fpc):
    codec = small_codec(fpc)
    audio = torch.randn(3, 1, 8, 6, 4)
    codes, recon = codec(audio)
    assert codes.shape == (3, 8 // fpc, 5)
    assert recon.shape == audio.shape


@given(frame=st.integers(0, 7), fpc=st.sampled_from([1, 2]), seed=st.integers(0, 100))
def test_codes_are_causal_in_latent_frames(frame, fpc, seed):
    codec = randomise(small_codec(fpc), seed)
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(1, 1, 8, 6, 4, generator=g)
    changed = audio.clone()
    changed[:, :, frame] += torch.randn(1, 1, 6, 4, generator=g)
    a, b = codec.encode(audio), codec.encode(changed)
    code = frame // fpc
    assert torch.equal(a[:, :code], b[:, :code])  # the past never sees the change
    assert not torch.allclose(a[:, code], b[:, code])  # the frame's own code does
    ra, rb = codec.decode(a), codec.decode(b)
    assert torch.equal(ra[:, :, : code * fpc], rb[:, :, : code * fpc])  # decoder is causal too


def test_causal_conv_matches_explicit_left_padding():
    conv = CausalConv1d(2, 3, kernel_size=4, stride=2)
    x = torch.randn(1, 2, 10)
    ref = F.conv1d(torch.cat([torch.zeros(1, 2, 2), x], -1), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), ref)
    with pytest.raises(ValueError, match=r"length \(9\) must be a multiple of the stride \(2\)"):
        conv(torch.randn(1, 2, 9))


def test_infonce_matches_a_plain_loop():
    a, v = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    flat_a = [x / x.norm() for x in a.reshape(6, 4)]
    flat_v = [x / x.norm() for x in v.reshape(6, 4)]
    tau = 0.2
    total = 0.0
    for i in range(6):
        row = [float(flat_a[i] @ flat_v[j]) / tau for j in range(6)]
        col = [float(flat_a[j] @ flat_v[i]) / tau for j in range(6)]
        total += -row[i] + math.log(sum(math.exp(r) for r in row))
        total += -col[i] + math.log(sum(math.exp(c) for c in col))
    assert frame_infonce(a, v, tau).item() == pytest.approx(total / 12, rel=1e-5)
    # aligned embeddings score better than the same embeddings shifted by one frame
    assert frame_infonce(v, v, tau) < frame_infonce(v.roll(1, dims=1), v, tau)


def test_reconstruction_and_contrastive_losses_go_down_with_training():
    torch.manual_seed(0)
    codec = small_codec()
    head = torch.nn.Linear(3, 5)
    audio = torch.randn(4, 1, 8, 6, 4)
    video = torch.randn(4, 8, 3)  # per-frame video embeddings (before the head)
    opt = torch.optim.Adam([*codec.parameters(), *head.parameters()], lr=3e-3)

    def losses():
        codes, recon = codec(audio)
        return F.mse_loss(recon, audio), frame_infonce(codes, head(video))

    first = [x.item() for x in losses()]
    for _ in range(60):
        opt.zero_grad()
        sum(losses()).backward()
        opt.step()
    last = [x.item() for x in losses()]
    assert last[0] < 0.8 * first[0] and last[1] < 0.8 * first[1]


def test_save_load_round_trip(tmp_path):
    codec = randomise(small_codec(2))
    codec.save_pretrained(tmp_path / "codec")
    again = FrameAudioCodec.from_pretrained(tmp_path / "codec")
    x = torch.randn(1, 1, 4, 6, 4)
    assert torch.equal(codec.encode(x), again.encode(x))


def test_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match=r"product of strides \(2, 2\) \(4\) must equal "
                                         r"columns_per_frame \(10\) x frames_per_code \(1\)"):
        FrameAudioCodec(columns_per_frame=10, strides=(2, 2))
    codec = small_codec(2)
    with pytest.raises(ValueError, match=r"w=5"):
        codec.encode(torch.randn(1, 1, 4, 6, 5))
    with pytest.raises(ValueError, match=r"t \(3\) must be a multiple of frames_per_code \(2\)"):
        codec.encode(torch.randn(1, 1, 3, 6, 4))
    with pytest.raises(ValueError, match="temperature"):
        frame_infonce(torch.randn(1, 2, 3), torch.randn(1, 2, 3), 0.0)
