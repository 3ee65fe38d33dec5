"""Chunked decoding along time: decode a long clip's latent a few frames at a time, exactly.

Decoding a long clip at once holds every intermediate of the decoder for every frame; the
peak memory grows with the clip and a long clip runs out of memory (the complaint users of
video-VAE pipelines have most often). Here the decoder runs on time chunks instead.

Why it is exact (not blended): every layer of :class:`~avblocks.latent.volume.VolumeDecoder`
is time-local except its temporal convolutions. The norms are
:class:`~avblocks.latent.volume.FrameGroupNorm` (statistics per frame), the other convs have
temporal kernel 1, the un-patch is per latent frame. A temporal conv of kernel ``k`` (stride
1, zero "same" padding) reaches ``(k - 1) // 2 * dilation`` frames each way, so a stack of
them reaches the sum of those: the *halo* (:func:`temporal_halo`; ``depth`` frames for a
VolumeDecoder). Each chunk of latent frames ``[start, stop)`` is decoded together with
``halo`` real neighbouring frames on each side (fewer at the clip's ends, where the full
decode sees the same zero padding), and the output frames of the halo are cropped. So every
kept frame sees exactly the inputs it sees in the full decode; the result equals the full
decode up to floating-point summation order (the conv kernels may block a shorter input
differently: differences of order 1e-7, measured in the tests).

MDSA specifics (:func:`decode_chunked`, :func:`iter_decoded_chunks`): the tri-plane
unprojection is *not* time-local (its inclusion-exclusion correction subtracts means over
the whole clip), so it is computed once for the whole clip at the decoder's input width and
latent resolution (one hidden volume ``b c t h' w'``); only the decoder, which holds the
large intermediates and the full-resolution output, runs per chunk. The time axis of both
streams is shared (one latent frame = ``patch[0]`` output frames), so chunks are aligned:
chunk ``[start, stop)`` of the latent is output frames ``[start * pt, stop * pt)`` of the
video *and* of the video-like audio.

Choice of a module it refuses: a decoder containing a temporal conv with stride != 1 or
asymmetric padding, or a plain ``nn.GroupNorm`` / ``BatchNorm3d`` over time, would make the
chunked result differ: :func:`temporal_halo` raises ``ValueError`` for those.
"""

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from avblocks.latent.mdsa import MDSA, AVLatent
from avblocks.latent.planes import PLANES
from avblocks.latent.triplane import TriPlane
from avblocks.latent.volume import FrameGroupNorm, VolumeDecoder
from avblocks.typing import Float, shapecheck

__all__ = ["temporal_halo", "decode_volume_chunked", "decode_chunked", "iter_decoded_chunks"]


def temporal_halo(module: nn.Module) -> int:
    """Latent frames each way that ``module``'s output at one frame depends on.

    Sums ``(k_t - 1) // 2 * dilation_t`` over its ``Conv3d`` layers (time = dim 2); raises
    ``ValueError`` for layers that would break time chunking (strided or asymmetrically
    padded temporal convs, normalisations with statistics over time).
    """
    halo = 0
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Conv3d):
            k, s, d = layer.kernel_size[0], layer.stride[0], layer.dilation[0]
            pad = layer.padding if isinstance(layer.padding, str) else layer.padding[0]
            if k == 1:
                continue
            reach = (k - 1) // 2 * d
            if s != 1 or k % 2 == 0 or pad not in (reach, "same"):
                raise ValueError(
                    f"{name}: temporal conv (kernel {k}, stride {s}, dilation {d}, padding "
                    f"{pad}) is not a stride-1 'same' conv: time chunks would not be exact"
                )
            halo += reach
        elif isinstance(layer, (nn.GroupNorm, nn.BatchNorm3d, nn.InstanceNorm3d)) and not isinstance(
            layer, FrameGroupNorm
        ):
            raise ValueError(
                f"{name}: {type(layer).__name__} takes statistics over time; only "
                "FrameGroupNorm (per frame) keeps time chunks exact"
            )
    return halo


def _check_chunk(chunk_frames: int) -> None:
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ValueError(f"chunk_frames ({chunk_frames!r}) must be an integer >= 1")


def _chunks(decoder: VolumeDecoder, z: Tensor, chunk_frames: int) -> Iterator[tuple[int, int, Tensor]]:
    """``(start, stop, output frames)`` per latent chunk ``[start, stop)``."""
    _check_chunk(chunk_frames)
    halo = temporal_halo(decoder)
    pt = decoder.patch[0]
    total = z.shape[2]
    for start in range(0, total, chunk_frames):
        stop = min(start + chunk_frames, total)
        lo, hi = max(0, start - halo), min(total, stop + halo)
        out = decoder(z[:, :, lo:hi])
        yield start, stop, out[:, :, (start - lo) * pt : (stop - lo) * pt]


@shapecheck
def decode_volume_chunked(
    decoder: VolumeDecoder, z: Float[Tensor, "b z tl hl wl"], *, chunk_frames: int = 8
) -> Float[Tensor, "b c t h w"]:
    """``decoder(z)`` computed ``chunk_frames`` latent frames at a time (see module doc).

    The output is written chunk by chunk into one preallocated tensor; the decoder's
    intermediates exist for one chunk (plus its halo) at a time.
    """
    result = None
    pt = decoder.patch[0]
    for start, stop, piece in _chunks(decoder, z, chunk_frames):
        if result is None:
            b, c, _, h, w = piece.shape
            result = piece.new_empty(b, c, z.shape[2] * pt, h, w)
        result[:, :, start * pt : stop * pt] = piece
    return result


def _hidden_volumes(autoencoder: MDSA, latent: AVLatent) -> tuple[Tensor, Tensor]:
    """The unscaled latent broadcast back to one hidden volume per stream (whole clip)."""
    unscaled = autoencoder.scale(latent, inverse=True)
    volumes = []
    for stream, planes in ((autoencoder.video, unscaled.video), (autoencoder.audio, unscaled.audio)):
        hidden = TriPlane(*(stream.from_latent[p](x) for p, x in zip(PLANES, planes, strict=True)))
        volumes.append(stream.unprojector(hidden))
    return volumes[0], volumes[1]


@torch.no_grad()
def iter_decoded_chunks(
    autoencoder: MDSA, latent: AVLatent, *, chunk_frames: int = 8
) -> Iterator[tuple[int, int, Tensor, Tensor]]:
    """Yield ``(first_frame, stop_frame, video b 3 k h w, audio b 1 k f w)`` per time chunk.

    Frame indices are output frames (latent frames times the temporal patch). Only one
    chunk's output exists at a time, so a caller that writes each chunk away (e.g. to an
    mp4) never holds the whole decoded clip. No gradients (inference).
    """
    video_z, audio_z = _hidden_volumes(autoencoder, latent)
    pt = autoencoder.video.decoder.patch[0]
    pairs = zip(
        _chunks(autoencoder.video.decoder, video_z, chunk_frames),
        _chunks(autoencoder.audio.decoder, audio_z, chunk_frames),
        strict=True,
    )
    for (start, stop, video), (_, _, audio) in pairs:
        yield start * pt, stop * pt, video, audio


@torch.no_grad()
def decode_chunked(
    autoencoder: MDSA, latent: AVLatent, *, chunk_frames: int = 8
) -> tuple[Tensor, Tensor]:
    """``autoencoder.decode(latent)`` with the decoders run ``chunk_frames`` latent frames at
    a time: ``(video b 3 t h w, audio frames b 1 t f w)``, equal to the full decode (see the
    module docstring). No gradients (inference)."""
    video_z, audio_z = _hidden_volumes(autoencoder, latent)
    return (
        decode_volume_chunked(autoencoder.video.decoder, video_z, chunk_frames=chunk_frames),
        decode_volume_chunked(autoencoder.audio.decoder, audio_z, chunk_frames=chunk_frames),
    )
