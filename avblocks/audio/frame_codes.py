"""Frame-aligned audio codes: mel columns -> one code per video (latent) frame, causally.

In the spirit of READ's SpeechAE (Wang et al. 2025: an audio autoencoder whose latent is
temporally aligned with the video latent, trained with reconstruction plus a frame-level
contrastive loss against the video latent). READ publishes no code for it; the choices here:

- **Input** is video-like audio ``b c t f w`` (:class:`avblocks.audio.VideoLikeAudio`,
  ideally normalised with :class:`avblocks.audio.LogMelNormalizer`): ``w`` spectrogram
  columns per video frame. It is read as one sequence of ``t * w`` columns of ``c * f``
  features (``b (c f) (t w)``), the clip's spectrogram, so the codec never sees frame edges.
- **Down-sampling** is a stack of strided causal 1D convolutions, one per entry of
  ``strides``; their product must be ``columns_per_frame * frames_per_code`` so that the
  encoder returns exactly one code per ``frames_per_code`` video frames (1: one per video
  frame; 2 or 4 for a video latent that halves / quarters time). A causal conv of kernel
  ``k`` and stride ``s`` is left-padded by ``k - s``, so output ``j`` ends on input column
  ``j s + s - 1``: the code of latent frame ``j`` depends on the columns of that frame and
  earlier ones only (never on the future), which is what streaming long generation needs.
  Kernels are ``2 s`` (each output also sees the previous output's span).
- **Blocks** between the strided convs are residual ``x + conv(act(norm(conv(act(norm(x))))))``
  with causal kernel-3 convs; the norm is a LayerNorm over channels per column (a GroupNorm
  over time would leak the future into the past). The second conv of each block is
  zero-initialised, so a block starts as the identity.
- **Decoder** (for the reconstruction loss) mirrors it: a 1x1 conv, then per stage a
  non-overlapping ``ConvTranspose1d`` (kernel = stride, an exact frame-local up-sampling)
  and a causal residual block, then a 1x1 conv back to ``c * f`` features per column.
- **Codes** come out as ``b t d`` (one token of width ``code_dim`` per latent frame), the
  layout the per-frame audio cross-attention (:mod:`avblocks.dit.audio_cross`) takes.
- **Contrastive loss** :func:`frame_infonce`: symmetric InfoNCE between L2-normalised audio
  codes and per-frame video embeddings. Every *other frame of every clip in the batch* is a
  negative, including the other frames of the same clip: that is what forces the code of
  frame ``t`` to say *when* something happens, not only which clip it is.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from avblocks.saveload import SaveLoadMixin
from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "CausalConv1d",
    "CausalResBlock1d",
    "FrameAudioCodec",
    "FrameAudioCodecConfig",
    "frame_infonce",
]


class CausalConv1d(nn.Conv1d):
    """``Conv1d`` left-padded by ``kernel - stride``: output ``j`` sees inputs ``<= j s + s - 1``.

    The input length must be a multiple of the stride (output length ``n / s``).
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int,
                 stride: int = 1) -> None:
        if stride < 1 or kernel_size < stride:
            raise ValueError(f"kernel_size ({kernel_size}) must be >= stride ({stride}) >= 1")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)
        self.left = kernel_size - stride

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.stride[0]:
            raise ValueError(
                f"sequence length ({x.shape[-1]}) must be a multiple of the stride ({self.stride[0]})"
            )
        return super().forward(F.pad(x, (self.left, 0)))


class _ColumnNorm(nn.LayerNorm):
    """LayerNorm over channels of ``b c n``, per column (never mixes time)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class CausalResBlock1d(nn.Module):
    """``x + conv2(act(norm(conv1(act(norm(x))))))`` with causal kernel-3 convs; ``conv2`` zero."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels ({channels}) must be >= 1")
        self.norm1 = _ColumnNorm(channels)
        self.conv1 = CausalConv1d(channels, channels, kernel_size=3)
        self.norm2 = _ColumnNorm(channels)
        self.conv2 = CausalConv1d(channels, channels, kernel_size=3)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


@dataclass
class FrameAudioCodecConfig:
    """Constructor arguments of :class:`FrameAudioCodec`."""

    in_channels: int = 1
    mel_bins: int = 64
    columns_per_frame: int = 10
    frames_per_code: int = 1
    strides: tuple[int, ...] = (2, 5)
    hidden_channels: int = 64
    code_dim: int = 32


class FrameAudioCodec(SaveLoadMixin, nn.Module):
    """Video-like audio ``b c t f w`` <-> frame codes ``b t' d`` (``t' = t / frames_per_code``).

    See the module docstring for every choice.

    Args:
        in_channels: audio channels ``c`` of the video-like audio.
        mel_bins: mel bins ``f``.
        columns_per_frame: spectrogram columns per video frame ``w``.
        frames_per_code: video frames per code (the video latent's temporal patch).
        strides: strides of the causal down-sampling convs; their product must be
            ``columns_per_frame * frames_per_code``.
        hidden_channels: width of the conv stack.
        code_dim: width ``d`` of each code.
    """

    config_class = FrameAudioCodecConfig

    def __init__(
        self,
        *,
        in_channels: int = 1,
        mel_bins: int = 64,
        columns_per_frame: int = 10,
        frames_per_code: int = 1,
        strides: tuple[int, ...] = (2, 5),
        hidden_channels: int = 64,
        code_dim: int = 32,
    ) -> None:
        super().__init__()
        strides = tuple(strides)
        for name, value in (("in_channels", in_channels), ("mel_bins", mel_bins),
                            ("columns_per_frame", columns_per_frame),
                            ("frames_per_code", frames_per_code),
                            ("hidden_channels", hidden_channels), ("code_dim", code_dim)):
            if value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1")
        if not strides or any(s < 1 for s in strides):
            raise ValueError(f"strides ({strides}) must be a non-empty tuple of integers >= 1")
        if math.prod(strides) != columns_per_frame * frames_per_code:
            raise ValueError(
                f"the product of strides {strides} ({math.prod(strides)}) must equal "
                f"columns_per_frame ({columns_per_frame}) x frames_per_code ({frames_per_code}) "
                f"= {columns_per_frame * frames_per_code}, so that there is one code per "
                "latent frame"
            )
        self.in_channels, self.mel_bins = in_channels, mel_bins
        self.columns_per_frame, self.frames_per_code = columns_per_frame, frames_per_code
        self.code_dim = code_dim
        features = in_channels * mel_bins
        enc: list[nn.Module] = [CausalConv1d(features, hidden_channels, kernel_size=3)]
        for s in strides:
            enc += [CausalResBlock1d(channels=hidden_channels),
                    CausalConv1d(hidden_channels, hidden_channels, kernel_size=2 * s, stride=s)]
        enc += [_ColumnNorm(hidden_channels), nn.SiLU(), nn.Conv1d(hidden_channels, code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(code_dim, hidden_channels, 1)]
        for s in reversed(strides):
            dec += [nn.ConvTranspose1d(hidden_channels, hidden_channels, kernel_size=s, stride=s),
                    CausalResBlock1d(channels=hidden_channels)]
        dec += [_ColumnNorm(hidden_channels), nn.SiLU(), nn.Conv1d(hidden_channels, features, 1)]
        self.decoder = nn.Sequential(*dec)

    def _check(self, audio: Tensor) -> None:
        c, t, f, w = audio.shape[1:]
        if (c, f, w) != (self.in_channels, self.mel_bins, self.columns_per_frame):
            raise ValueError(
                f"audio frames have c={c}, f={f}, w={w}; the codec expects "
                f"c={self.in_channels}, f={self.mel_bins}, w={self.columns_per_frame}"
            )
        if t % self.frames_per_code:
            raise ValueError(
                f"t ({t}) must be a multiple of frames_per_code ({self.frames_per_code})"
            )

    @shapecheck
    def encode(self, audio: Float[Tensor, "b c t f w"]) -> Float[Tensor, "b tc d"]:
        """Codes ``b (t / frames_per_code) code_dim``; code ``j`` sees frames ``<= (j+1) fpc - 1``."""
        self._check(audio)
        seq = rearrange(audio, "b c t f w -> b (c f) (t w)")
        return rearrange(self.encoder(seq), "b d n -> b n d")

    @shapecheck
    def decode(self, codes: Float[Tensor, "b tc d"]) -> Float[Tensor, "b c t f w"]:
        """Reconstructed video-like audio ``b c (tc * frames_per_code) f w``."""
        if codes.shape[-1] != self.code_dim:
            raise ValueError(f"codes have width {codes.shape[-1]}, expected {self.code_dim}")
        seq = self.decoder(rearrange(codes, "b n d -> b d n"))
        return rearrange(seq, "b (c f) (t w) -> b c t f w", c=self.in_channels,
                         w=self.columns_per_frame)

    @shapecheck
    def forward(
        self, audio: Float[Tensor, "b c t f w"]
    ) -> tuple[Float[Tensor, "b tc d"], Float[Tensor, "b c t f w"]]:
        """``(codes, reconstruction)``."""
        codes = self.encode(audio)
        return codes, self.decode(codes)


@shapecheck
def frame_infonce(
    audio_codes: Float[Tensor, "b t d"],
    video_embeddings: Float[Tensor, "b t d"],
    temperature: float = 0.1,
) -> Float[Tensor, ""]:
    """Symmetric frame-level InfoNCE between audio codes and video embeddings of equal width.

    Both are L2-normalised per frame; logits are ``a_i . v_j / temperature`` over all
    ``N = b t`` frames of the batch (row-major ``(b t)``), the positive of audio frame ``i``
    is video frame ``i``. Returns ``(CE(logits, diag) + CE(logits^T, diag)) / 2``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature ({temperature}) must be > 0")
    a = F.normalize(audio_codes.reshape(-1, audio_codes.shape[-1]).float(), dim=-1)
    v = F.normalize(video_embeddings.reshape(-1, video_embeddings.shape[-1]).float(), dim=-1)
    logits = a @ v.T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
