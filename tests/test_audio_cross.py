"""Per-frame audio cross-attention: locality (property), zero-init identity, binding."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from avblocks.attention import attention_backend
from avblocks.dit.audio_cross import AudioBinding, AudioSTDiTBlock, FrameAudioCrossAttention
from avblocks.dit.blocks import STDiTBlock


def randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


@given(frames=st.integers(1, 6), tokens=st.integers(1, 3), window=st.integers(0, 3),
       changed=st.integers(0, 5), seed=st.integers(0, 1000))
def test_output_of_frame_t_moves_only_with_audio_inside_its_window(frames, tokens, window,
                                                                   changed, seed):
    changed %= frames
    attn = randomise(FrameAudioCrossAttention(hidden_size=8, audio_dim=4, num_heads=2,
                                              window=window), seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, frames, tokens, 8, generator=g)
    audio = torch.randn(2, frames, 4, generator=g)
    other = audio.clone()
    other[:, changed] = torch.randn(2, 4, generator=g) * 3
    a, b = attn(x, audio), attn(x, other)
    for t in range(frames):
        if abs(t - changed) > window:
            assert torch.equal(a[:, t], b[:, t]), (t, changed, window)
        else:
            assert not torch.allclose(a[:, t], b[:, t], atol=1e-6), (t, changed, window)


def test_matches_a_per_frame_loop_reference():
    attn = randomise(FrameAudioCrossAttention(hidden_size=8, audio_dim=4, num_heads=2, window=1))
    x, audio = torch.randn(1, 4, 3, 8), torch.randn(1, 4, 4)
    out = attn(x, audio)
    kv = attn.kv(attn.norm_audio(audio))
    for t in range(4):
        lo, hi = max(0, t - 1), min(4, t + 2)
        q = attn.q(x[0, t]).reshape(3, 2, 4).transpose(0, 1)  # h n e
        k, v = kv[0, lo:hi].reshape(hi - lo, 2, 2, 4).permute(1, 2, 0, 3)  # two h m e
        w = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1)
        ref = attn.proj((w @ v).transpose(0, 1).reshape(3, 8))
        torch.testing.assert_close(out[0, t], ref, rtol=1e-5, atol=1e-5)


def test_backends_agree():
    attn = randomise(FrameAudioCrossAttention(hidden_size=8, audio_dim=4, num_heads=2, window=1))
    x, audio = torch.randn(2, 5, 3, 8), torch.randn(2, 5, 4)
    with attention_backend("math"):
        ref = attn(x, audio)
    with attention_backend("sdpa"):
        torch.testing.assert_close(attn(x, audio), ref, rtol=1e-5, atol=1e-5)


def test_fresh_block_is_the_stdit_block_and_audio_matters_once_gated():
    plain = randomise(STDiTBlock(hidden_size=8, num_heads=2), 3)
    block = AudioSTDiTBlock(hidden_size=8, num_heads=2, audio_dim=4, window=1)
    block.load_stdit_block(plain)
    x, c, audio = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 4)
    assert torch.equal(block(x, c, audio), plain(x, c))
    randomise(block.adaLN_cross, 5)
    randomise(block.cross_attn, 6)
    assert not torch.allclose(block(x, c, audio), block(x, c, torch.randn(2, 4, 4)))  # (a constant shift would vanish in the audio LayerNorm)


def test_binding_supplies_audio_to_blocks_called_without_it():
    binding = AudioBinding()
    block = randomise(AudioSTDiTBlock(hidden_size=8, num_heads=2, audio_dim=4, binding=binding))
    x, c, audio = torch.randn(1, 3, 2, 8), torch.randn(1, 8), torch.randn(1, 3, 4)
    with binding.bind(audio):
        bound = block(x, c)
    assert torch.equal(bound, block(x, c, audio))
    with pytest.raises(ValueError, match="no audio codes"):
        block(x, c)


def test_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match=r"window \(-1\)"):
        FrameAudioCrossAttention(hidden_size=8, audio_dim=4, num_heads=2, window=-1)
    with pytest.raises(ValueError, match=r"hidden_size \(6\) must be divisible by num_heads \(4\)"):
        FrameAudioCrossAttention(hidden_size=6, audio_dim=4, num_heads=4)
    attn = FrameAudioCrossAttention(hidden_size=8, audio_dim=4, num_heads=2)
    with pytest.raises(Exception, match="t"):  # frames of video and audio must agree
        attn(torch.randn(1, 3, 2, 8), torch.randn(1, 4, 4))
