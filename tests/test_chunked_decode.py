"""Chunked decoding along time (avblocks.latent.chunked) equals the full decode."""

import pytest
import torch
from torch import nn

import avblocks.latent.chunked as chunked
from avblocks.latent.chunked import (
    decode_chunked,
    decode_volume_chunked,
    iter_decoded_chunks,
    temporal_halo,
)
from avblocks.latent.mdsa import MDSA
from avblocks.latent.volume import VolumeDecoder


def _randomise(module: nn.Module) -> nn.Module:
    """Non-zero temporal convs (zero at init), so every frame depends on its neighbours."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module.eval()


@pytest.fixture(scope="module")
def mdsa() -> MDSA:
    torch.manual_seed(0)
    return _randomise(MDSA(hidden_channels=8, latent_channels=2, depth=2, heads=2, groups=2))


def _latent(model: MDSA, t: int = 8):
    video = torch.randn(1, 3, t, 8, 8)
    audio = torch.randn(1, 1, t, 8, 4)
    with torch.no_grad():
        return model.encode(video, audio)


@pytest.mark.parametrize("chunk", [1, 3, 8, 20])
def test_chunked_decode_equals_full_decode(mdsa, chunk):
    latent = _latent(mdsa)
    with torch.no_grad():
        video, audio = mdsa.decode(latent)
    cv, ca = decode_chunked(mdsa, latent, chunk_frames=chunk)
    assert cv.shape == video.shape and ca.shape == audio.shape
    torch.testing.assert_close(cv, video, rtol=0, atol=1e-5)
    torch.testing.assert_close(ca, audio, rtol=0, atol=1e-5)


def test_chunks_without_the_halo_would_differ(mdsa, monkeypatch):
    """The test above can fail: with no halo, frames at chunk edges change."""
    latent = _latent(mdsa)
    with torch.no_grad():
        video, _ = mdsa.decode(latent)
    monkeypatch.setattr(chunked, "temporal_halo", lambda module: 0)
    cv, _ = decode_chunked(mdsa, latent, chunk_frames=2)
    assert (cv - video).abs().max() > 1e-3


def test_iterated_chunks_are_aligned_and_concatenate_to_the_full_decode(mdsa):
    latent = _latent(mdsa)
    with torch.no_grad():
        video, audio = mdsa.decode(latent)
    pieces = list(iter_decoded_chunks(mdsa, latent, chunk_frames=3))
    assert [(a, b) for a, b, _, _ in pieces] == [(0, 3), (3, 6), (6, 8)]
    for start, stop, v, a in pieces:
        assert v.shape[2] == a.shape[2] == stop - start
    torch.testing.assert_close(torch.cat([v for *_, v, _ in pieces], 2), video, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat([a for *_, a in pieces], 2), audio, rtol=0, atol=1e-5)


def test_temporal_patch_maps_latent_chunks_to_output_frames():
    decoder = _randomise(VolumeDecoder(out_channels=3, latent_channels=4, hidden_channels=8,
                                       patch=(2, 2, 2), depth=3, groups=2))
    z = torch.randn(2, 4, 9, 3, 3)
    with torch.no_grad():
        full = decoder(z)
        parts = decode_volume_chunked(decoder, z, chunk_frames=4)
    assert full.shape[2] == 18
    torch.testing.assert_close(parts, full, rtol=0, atol=1e-5)
    assert temporal_halo(decoder) == 3


def test_halo_refuses_layers_that_mix_time_globally():
    assert temporal_halo(nn.Conv3d(2, 2, (5, 1, 1), padding=(4, 0, 0), dilation=(2, 1, 1))) == 4
    with pytest.raises(ValueError, match="GroupNorm"):
        temporal_halo(nn.Sequential(nn.GroupNorm(1, 2)))
    with pytest.raises(ValueError, match="stride"):
        temporal_halo(nn.Conv3d(2, 2, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)))
    with pytest.raises(ValueError, match="chunk_frames"):
        decode_volume_chunked(VolumeDecoder(latent_channels=2, hidden_channels=8),
                              torch.randn(1, 2, 2, 2, 2), chunk_frames=0)
