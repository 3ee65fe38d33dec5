"""The READ-style audio-to-video denoiser: pixel frames, per-frame times, one audio code per frame.

:class:`ReadDenoiser` predicts the flow velocity of a clip ``b c t h w`` of pixel frames
``[reference, motion_1 .. motion_m]`` at per-frame times ``b t``, conditioned on one audio
code per motion frame (``b m da``, :class:`avblocks.audio.frame_codes.FrameAudioCodec`).

Choices (READ publishes no code):

- **pixel frames, no video codec.** On the 32 x 32 synthetic set a frame is 3 x 32 x 32 =
  3072 values; patches of ``patch x patch`` pixels (default 4: 64 tokens per frame) are the
  tokens. A per-frame latent (``avblocks.latent.VolumeEncoder`` with ``patch=(1, 4, 4)``)
  would cut the tokens but adds a codec stage to train and its errors; at this size pixels
  are cheaper and everything below works unchanged on latents (``in_channels``, ``size``);
- **reference beside every frame**: the patch embedding reads each frame's channels
  concatenated with the reference frame's (``2 c`` input channels; frame 0 of ``x`` is the
  clean reference, as the schedule holds it). Temporal attention could fetch the reference
  too, but a per-patch copy is what most pixels need (static background, the object's
  look), and as a channel it is one linear map away: in a five-minute CPU run this is the
  difference between noise and frames;
- **clean frames as the reference plus a change**: the network's output is added to the
  reference frame, so the zero-initialised final layer starts by predicting the reference
  for every frame (a still video: right background, right object, no motion) and training
  only has to learn what moves; without it, five CPU minutes still sample blurry blocks;
- **x-prediction, velocity out** (Li & He 2025, "Back to Basics: Let Denoising Generative
  Models Denoise"): the network predicts the clean frames ``x0`` (as above) and :meth:`ReadDenoiser.forward` returns
  the flow velocity ``(x_t - x0) / max(t, 0.05)``, so the objective and the samplers are the
  library's velocity ones unchanged. A pixel patch of ``8 x 8 x 3 = 192`` values leaves a
  token of width 64 through a linear map: a velocity (which contains the full-rank noise)
  cannot pass that bottleneck (a velocity-output run plateaued at a loss of 0.72, near the
  ``1 - 64/192`` of the noise a rank-64 map must drop), a clean patch (low-dimensional
  images) can. ``0.05`` bounds the division near ``t = 0`` (the sampler's
  grid never goes below ``1 / steps`` before the last, exact, step to 0);
- **tokens**: :class:`~avblocks.dit.patch.PatchEmbed2d` per frame, DiT's 2D sin-cos table for
  positions inside a frame, and a learned per-frame table ``frame_embed`` (``t x d``, std
  0.02): the reference frame is a different *kind* of frame from the motion frames, and the
  clip positions are the same in every clip of a long generation (clip-relative time);
- **conditioning**: ``c = TimestepEmbedder(t * timestep_scale)`` per frame (``b t d``); no
  class label (the reference frame carries the identity);
- **audio**: the ``m`` motion codes are preceded by a learned ``null_audio`` code for the
  reference frame (which has no time of its own), then every block is an
  :class:`~avblocks.dit.audio_cross.AudioSTDiTBlock`: frame ``t`` attends to the codes of
  frames ``t - window .. t + window``. The codes are bound for the forward call
  (:class:`~avblocks.dit.audio_cross.AudioBinding`), so :meth:`ReadDenoiser.forward_blocks` keeps the
  ``(tokens, c)`` signature that step caches (:mod:`avblocks.dit.cache`) wrap;
- **audio dropout** for classifier-free guidance: ``drop_audio`` (``b`` bool) replaces every
  code of a sample by ``null_audio``, the same learned code the reference frame hears (so
  "no audio" is one vector, learned in training);
- temporal attention is bidirectional within a clip (a clip is denoised jointly);
- DiT initialisation: zero adaLN (each block the identity), zero final layer.
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Real
from torch import nn

from avblocks.attention.positional import dit_sincos_2d
from avblocks.dit.audio_cross import AudioBinding, AudioSTDiTBlock
from avblocks.dit.blocks import FinalLayer
from avblocks.dit.embedders import TimestepEmbedder
from avblocks.dit.patch import PatchEmbed2d
from avblocks.saveload import SaveLoadMixin
from avblocks.typing import Bool, Float, Tensor, shapecheck

__all__ = ["ReadDenoiser", "ReadDenoiserConfig"]

FrameTimes = Real[Tensor, "b *frames"]
SampleFlags = Bool[Tensor, "b"]


@dataclass
class ReadDenoiserConfig:
    in_channels: int = 3
    size: int = 32
    frames: int = 9
    patch: int = 4
    hidden_size: int = 64
    depth: int = 3
    num_heads: int = 4
    mlp_ratio: float = 2.0
    audio_dim: int = 32
    window: int = 1
    timestep_scale: float = 1000.0


class ReadDenoiser(SaveLoadMixin, nn.Module):
    """``(x b c t h w, t b | b t, audio b (t-1) da) -> velocity b c t h w``; see the module doc.

    Args:
        in_channels: channels of a frame.
        size: frame side (divisible by ``patch``).
        frames: frames per clip ``t`` (reference + motion frames).
        patch: patch side.
        hidden_size: token width (divisible by ``num_heads`` and by 4).
        depth: number of :class:`AudioSTDiTBlock`.
        num_heads: attention heads.
        mlp_ratio: MLP width / ``hidden_size``.
        audio_dim: width of the audio codes.
        window: audio frames each side a video frame attends to.
        timestep_scale: flow time is multiplied by this before the sinusoid.
    """

    config_class = ReadDenoiserConfig

    def __init__(self, *, in_channels: int = 3, size: int = 32, frames: int = 9, patch: int = 4,
                 hidden_size: int = 64, depth: int = 3, num_heads: int = 4,
                 mlp_ratio: float = 2.0, audio_dim: int = 32, window: int = 1,
                 timestep_scale: float = 1000.0) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("size", size), ("patch", patch),
                            ("depth", depth), ("audio_dim", audio_dim)):
            if value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1")
        if frames < 2:
            raise ValueError(f"frames ({frames}) must be >= 2 (a reference and a motion frame)")
        if size % patch:
            raise ValueError(f"size ({size}) must be divisible by patch ({patch})")
        if hidden_size % 4 or hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by 4 and by num_heads ({num_heads})"
            )
        self.in_channels, self.size, self.frames, self.patch = in_channels, size, frames, patch
        self.timestep_scale = timestep_scale
        self.min_time = 0.05
        self.grid = size // patch
        # every frame's patches see the (clean) reference frame's patches beside their own
        self.x_embedder = PatchEmbed2d(in_channels=2 * in_channels, hidden_size=hidden_size,
                                       patch_size=patch)
        self.register_buffer("pos_embed", dit_sincos_2d(hidden_size, self.grid), persistent=False)
        self.frame_embed = nn.Parameter(torch.randn(frames, hidden_size) * 0.02)
        self.null_audio = nn.Parameter(torch.zeros(audio_dim))
        self.t_embedder = TimestepEmbedder(hidden_size=hidden_size)
        self.binding = AudioBinding()
        self.blocks = nn.ModuleList(
            AudioSTDiTBlock(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio,
                            audio_dim=audio_dim, window=window, binding=self.binding)
            for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size=hidden_size,
                                      patch_dim=patch * patch * in_channels)

    def forward_blocks(
        self, tokens: Float[Tensor, "b t n d"], c: Float[Tensor, "b t d"]
    ) -> Float[Tensor, "b t n d"]:
        """The block stack (audio from ``self.binding``): the method step caches wrap."""
        for block in self.blocks:
            tokens = block(tokens, c)
        return tokens

    @shapecheck
    def forward(
        self,
        x: Float[Tensor, "b c t h w"],
        t: FrameTimes,
        audio: Float[Tensor, "b m da"],
        drop_audio: SampleFlags | None = None,
    ) -> Float[Tensor, "b c t h w"]:
        """Velocity of ``x`` at times ``t`` given one code per motion frame; samples where
        ``drop_audio`` is True hear ``null_audio`` on every frame (classifier-free guidance)."""
        b, _, frames = x.shape[:3]
        if frames != self.frames or audio.shape[1] != frames - 1:
            raise ValueError(
                f"x has {frames} frames and audio {audio.shape[1]} codes; the model takes "
                f"frames={self.frames} and frames - 1 = {self.frames - 1} codes (one per motion frame)"
            )
        if t.ndim == 1:
            t = t[:, None].expand(b, frames)
        both = torch.cat([x, x[:, :, :1].expand_as(x)], dim=1)  # frame + reference channels
        tokens = rearrange(self.x_embedder(rearrange(both, "b c t h w -> (b t) c h w")),
                           "(b t) n d -> b t n d", b=b)
        tokens = tokens + self.pos_embed.to(tokens.dtype) + self.frame_embed[None, :, None, :]
        c = self.t_embedder(t.to(torch.float32) * self.timestep_scale).to(tokens.dtype)
        null = self.null_audio.to(audio.dtype)
        if drop_audio is not None:
            audio = torch.where(drop_audio[:, None, None], null, audio)
        codes = torch.cat([null.expand(b, 1, -1), audio], dim=1)
        with self.binding.bind(codes):
            tokens = self.forward_blocks(tokens, c)
        out = self.final_layer(tokens, c)
        change = rearrange(out, "b t (h w) (p q c) -> b c t (h p) (w q)", h=self.grid,
                           p=self.patch, q=self.patch)
        clean = x[:, :, :1] + change  # the reference frame plus what moved
        # x-prediction: the velocity of the flow path through x that ends at `clean`
        times = t.to(x.dtype).clamp_min(self.min_time)[:, None, :, None, None]
        return (x - clean) / times
