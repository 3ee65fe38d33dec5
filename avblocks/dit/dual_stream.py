"""A dual-stream DiT: video and audio each their own stream and width, coupled by any coupling.

Inputs: pixel frames ``b cv t h w`` (in [-1, 1]) and normalised video-like audio ``b ca t f w``
(``w`` spectrogram columns per video frame), one flow time per stream and clip (``b``, ``b``)
and class labels ``b``. Output: each stream's flow velocity. Per-stream times make joint
generation, audio-to-video (audio held clean at time 0) and video-to-audio one model
(ProAV-DiT's per-plane times, per stream here).

Layout::

    video tokens  b (t hp wp) dv   PatchEmbed2d per frame + DiT's 2D sin-cos table (space)
    audio tokens  b (t k) da       each token: ``audio.patch`` columns x every mel bin x channel
    times         seconds of each token: the centre of the span it covers
    for each block:  video, audio = StreamBlock_v(video, c_v), StreamBlock_a(audio, c_a)
                     video, audio = coupling(video, audio, times, c_v, c_a)   every k-th block
    FinalLayer per stream -> patches -> clean estimate -> velocity

Choices (ours; LTX-2 and Ovi are the models this follows in miniature):

- **Time is in seconds, not in indices.** Video frame ``k`` stands for ``(k + 1/2) / fps``,
  audio token ``j`` (columns ``[j p, (j + 1) p)``) for ``(j + 1/2) p / (fps w)``: the two
  streams run at different rates (8 and 40 tokens a second on the synthetic set) and meet by
  time in every coupling. Each stream's self-attention rotates queries and keys by the same
  :class:`~avblocks.attention.time_rope.TimeRotary` (``time_scale`` rotary units a second);
  spatial position within a video frame comes from the sin-cos table added at embedding.
- **Audio tokens are slices of time** (all mel bins of ``p`` columns), as LTX-2's and Ovi's
  audio latents are 1-D sequences in time.
- **Streams** are :class:`StreamBlock` (DiT's block, adaLN-Zero, with time-rotary
  self-attention), their own timestep and label embedders, their own final layer. Labels are
  dropped for both streams at once (classifier-free guidance guides the pair).
- **Couplings** (:func:`~avblocks.coupling.build_coupling`) after blocks ``k-1, 2k-1, ...``
  (``coupling.every = k``), conditioned on each stream's vector (adaLN-Zero gates), so
  a fresh model's streams are independent and a ``kind="none"`` model is the uncoupled
  baseline.
- **Clean-estimate output** (as the READ denoiser; Li & He 2025): an audio token of ``2 x 64``
  mel values is wider than the stream (64 channels or fewer); a velocity (which carries the
  full-rank noise) cannot pass that bottleneck, a clean patch (low-dimensional) can. The
  network predicts each stream's clean values and :meth:`DualStreamDiT.forward` returns the velocity
  ``(x_t - x0) / max(t, 0.05)``, so the library's flow-matching loss and samplers apply
  unchanged (a stream held clean at ``t = 0`` is not moved by the samplers, whatever its
  velocity). EDM's preconditioning (``x0 = c_skip x_t + c_out F``, Karras et al. 2022) was
  tried instead and trained worse on the synthetic set (velocity error after 200-300 steps:
  video 0.37 vs 0.20, audio 0.28 vs 0.03): its skip puts noise into the estimate, which the
  network must then cancel through the same bottleneck.
- **Step caches** hook into :meth:`DualStreamDiT.forward_blocks` and the blocks' parts
  (:class:`~avblocks.dit.stream_cache.StreamCache`).
- Initialisation as DiT: xavier Linears, zero adaLN (every block the identity), zero final
  layers (a fresh model predicts a clean estimate of 0).
"""

from dataclasses import dataclass, field
from fractions import Fraction

import torch
from einops import rearrange
from jaxtyping import Int, Real
from torch import nn

from avblocks.attention.dispatch import attend
from avblocks.attention.positional import dit_sincos_2d
from avblocks.attention.time_rope import TimeRotary
from avblocks.coupling.base import Coupling
from avblocks.coupling.registry import CouplingConfig, build_coupling
from avblocks.dit.blocks import DiTBlock, FinalLayer
from avblocks.dit.embedders import LabelEmbedder, TimestepEmbedder
from avblocks.dit.modulation import modulate, to_tokens
from avblocks.dit.patch import PatchEmbed2d
from avblocks.saveload import SaveLoadMixin
from avblocks.typing import Float, Tensor, shapecheck

__all__ = [
    "VideoStreamConfig",
    "AudioStreamConfig",
    "DualStreamDiTConfig",
    "DualStreamDiT",
    "DualStreamBlock",
    "StreamBlock",
    "stream_times",
]

Labels = Int[Tensor, "b"]
Seconds = Float[Tensor, "n"]
VideoClip = Float[Tensor, "b cv t h w"]  # the streams share b and t: the alignment check
AudioClip = Float[Tensor, "b ca t f wa"]
ClipTimes = Real[Tensor, "b"]
MIN_TIME = 0.05  # the velocity divides by max(t, MIN_TIME) (module doc)


@dataclass
class VideoStreamConfig:
    channels: int = 3
    size: tuple[int, int] = (32, 32)  # frame (height, width)
    patch: int = 8  # square pixel patches, one token each
    width: int = 128


@dataclass
class AudioStreamConfig:
    channels: int = 1
    mel_bins: int = 64
    frame_columns: int = 10  # spectrogram columns per video frame
    patch: int = 2  # columns per token (every mel bin)
    width: int = 64


@dataclass
class DualStreamDiTConfig:
    video: VideoStreamConfig = field(default_factory=VideoStreamConfig)
    audio: AudioStreamConfig = field(default_factory=AudioStreamConfig)
    frames: int = 16
    fps: Fraction = Fraction(8)
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 4
    class_dropout: float = 0.1
    coupling: CouplingConfig = field(default_factory=CouplingConfig)
    time_scale: float = 8.0
    timestep_scale: float = 1000.0


def stream_times(frames: int, fps: Fraction, tokens_per_frame: int, audio_tokens_per_frame: int
                 ) -> tuple[Tensor, Tensor]:
    """``(video, audio)`` token times in seconds (float32; computed exactly, then rounded):
    video frame ``k`` at ``(k + 1/2) / fps`` (repeated per token of the frame), audio token
    ``j`` of ``audio_tokens_per_frame`` per frame at the centre of its span."""
    fps = Fraction(fps)
    video = [float((k + Fraction(1, 2)) / fps) for k in range(frames) for _ in range(tokens_per_frame)]
    per = audio_tokens_per_frame
    audio = [float((j + Fraction(1, 2)) / (fps * per)) for j in range(frames * per)]
    return torch.tensor(video, dtype=torch.float32), torch.tensor(audio, dtype=torch.float32)


class StreamBlock(DiTBlock):
    """A :class:`DiTBlock` whose self-attention rotates queries and keys to the tokens' times.

    Same parameters as DiT's block (``norm1, attn.qkv, attn.proj, norm2, mlp,
    adaLN_modulation``); ``forward(x, c, seconds, rotary)``.
    """

    @shapecheck
    def forward(self, x: Float[Tensor, "b n d"], c: Float[Tensor, "b d"], seconds: Seconds,
                rotary: TimeRotary) -> Float[Tensor, "b n d"]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            to_tokens(v, x) for v in self.adaLN_modulation(c))
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        q, k, v = rearrange(self.attn.qkv(h), "b n (three h e) -> three b h n e", three=3,
                            h=self.attn.num_heads)
        out = attend(rotary(q, seconds), rotary(k, seconds), v)
        x = x + gate_msa * self.attn.proj(rearrange(out, "b h n e -> b n (h e)"))
        return self._mlp_branch(x, shift_mlp, scale_mlp, gate_mlp)


class DualStreamBlock(nn.Module):
    """One block of each stream, then the coupling (if this block has one)."""

    def __init__(self, *, video: StreamBlock, audio: StreamBlock, coupling: Coupling | None) -> None:
        super().__init__()
        self.video, self.audio, self.coupling = video, audio, coupling

    def streams(self, video: Tensor, audio: Tensor, c_video: Tensor, c_audio: Tensor, video_time: Tensor,
                audio_time: Tensor, rotary: TimeRotary) -> tuple[Tensor, Tensor]:
        """The two stream blocks alone (what a step cache may run for one stream only)."""
        return (self.video(video, c_video, video_time, rotary), self.audio(audio, c_audio, audio_time, rotary))

    def couple(self, video: Tensor, audio: Tensor, c_video: Tensor, c_audio: Tensor, video_time: Tensor,
               audio_time: Tensor) -> tuple[Tensor, Tensor]:
        if self.coupling is None:
            return video, audio
        return self.coupling(video, audio, video_time, audio_time, c_video, c_audio)

    def forward(self, video: Tensor, audio: Tensor, c_video: Tensor, c_audio: Tensor, video_time: Tensor,
                audio_time: Tensor, rotary: TimeRotary) -> tuple[Tensor, Tensor]:
        video, audio = self.streams(video, audio, c_video, c_audio, video_time, audio_time, rotary)
        return self.couple(video, audio, c_video, c_audio, video_time, audio_time)


class DualStreamDiT(SaveLoadMixin, nn.Module):
    """``(video b cv t h w, audio b ca t f w, t_video b, t_audio b, y b) -> (v_video, v_audio)``.

    Args:
        video, audio: each stream's layout and width (:class:`VideoStreamConfig`,
            :class:`AudioStreamConfig`).
        frames: video frames ``t`` per clip (the audio has one video-like frame per video frame).
        fps: video frame rate (exact), for the tokens' times.
        depth: blocks per stream.
        num_heads: heads of each stream's self-attention (divides both widths).
        mlp_ratio: MLP hidden width / stream width.
        num_classes: real classes; ``num_classes`` is the null label (guidance).
        class_dropout: label-dropout probability in training (> 0 for guidance).
        coupling: which coupling joins the streams, how often, with which options.
        time_scale: rotary units per second (:class:`TimeRotary`'s ``scale``).
        timestep_scale: flow times are multiplied by this before their sinusoidal embedding.
    """

    config_class = DualStreamDiTConfig

    def __init__(
        self,
        *,
        video: VideoStreamConfig = VideoStreamConfig(),  # noqa: B008 (copied into the config)
        audio: AudioStreamConfig = AudioStreamConfig(),  # noqa: B008
        frames: int = 16,
        fps: Fraction = Fraction(8),  # noqa: B008
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 4,
        class_dropout: float = 0.1,
        coupling: CouplingConfig = CouplingConfig(),  # noqa: B008
        time_scale: float = 8.0,
        timestep_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        (h, w), p = video.size, video.patch
        for name, value in (("frames", frames), ("depth", depth), ("num_heads", num_heads),
                            ("num_classes", num_classes), ("video.width", video.width),
                            ("audio.width", audio.width), ("video.patch", p), ("audio.patch", audio.patch)):
            if value < 1:
                raise ValueError(f"{name} ({value}) must be >= 1")
        if h % p or w % p:
            raise ValueError(f"video.size ({h}, {w}) must be divisible by video.patch ({p})")
        if audio.frame_columns % audio.patch:
            raise ValueError(f"audio.frame_columns ({audio.frame_columns}) must be divisible by "
                             f"audio.patch ({audio.patch}): a token never straddles two video frames")
        for name, width in (("video.width", video.width), ("audio.width", audio.width)):
            if width % num_heads or (width // num_heads) % 2:
                raise ValueError(f"{name} ({width}) must be a multiple of num_heads ({num_heads}) "
                                 "with an even head width (rotary pairs)")
        if video.width % 4:
            raise ValueError(f"video.width ({video.width}) must be divisible by 4 (2D sin-cos table)")
        if not 0.0 < class_dropout < 1.0:
            raise ValueError(f"class_dropout ({class_dropout}) must lie in (0, 1): guidance needs the null label")
        if not fps > 0 or not time_scale > 0 or not timestep_scale > 0:
            raise ValueError(f"fps ({fps}), time_scale ({time_scale}) and timestep_scale ({timestep_scale}) "
                             "must be > 0")
        self.video_cfg, self.audio_cfg = video, audio
        self.frames, self.fps, self.timestep_scale = frames, Fraction(fps), timestep_scale
        self.rotary = TimeRotary(scale=time_scale)
        self.grid = (h // p, w // p)
        self.audio_tokens_per_frame = audio.frame_columns // audio.patch
        dv, da = video.width, audio.width

        self.video_embed = PatchEmbed2d(in_channels=video.channels, hidden_size=dv, patch_size=p)
        self.register_buffer("video_pos", dit_sincos_2d(dv, self.grid), persistent=False)
        self.audio_embed = nn.Linear(audio.channels * audio.mel_bins * audio.patch, da)
        nn.init.xavier_uniform_(self.audio_embed.weight)
        nn.init.zeros_(self.audio_embed.bias)
        video_time, audio_time = stream_times(frames, self.fps, self.grid[0] * self.grid[1],
                                              self.audio_tokens_per_frame)
        self.register_buffer("video_time", video_time, persistent=False)
        self.register_buffer("audio_time", audio_time, persistent=False)
        self.t_video, self.t_audio = TimestepEmbedder(hidden_size=dv), TimestepEmbedder(hidden_size=da)
        self.y_video = LabelEmbedder(num_classes=num_classes, hidden_size=dv, dropout_prob=class_dropout)
        self.y_audio = LabelEmbedder(num_classes=num_classes, hidden_size=da, dropout_prob=class_dropout)
        self.blocks = nn.ModuleList(
            DualStreamBlock(
                video=StreamBlock(hidden_size=dv, num_heads=num_heads, mlp_ratio=mlp_ratio),
                audio=StreamBlock(hidden_size=da, num_heads=num_heads, mlp_ratio=mlp_ratio),
                coupling=(build_coupling(coupling, video_dim=dv, audio_dim=da, rotary=self.rotary)
                          if (i + 1) % coupling.every == 0 else None))
            for i in range(depth))
        self.final_video = FinalLayer(hidden_size=dv, patch_dim=p * p * video.channels)
        self.final_audio = FinalLayer(hidden_size=da, patch_dim=audio.channels * audio.mel_bins * audio.patch)

    # ------------------------------------------------------------------ properties
    @property
    def null_label(self) -> int:
        return self.y_video.null_class

    @property
    def num_classes(self) -> int:
        return self.y_video.num_classes

    def video_shape(self) -> tuple[int, int, int, int]:
        """``(c, t, h, w)`` of the video this model takes."""
        return (self.video_cfg.channels, self.frames, *self.video_cfg.size)

    def audio_shape(self) -> tuple[int, int, int, int]:
        """``(c, t, f, w)`` of the video-like audio this model takes."""
        a = self.audio_cfg
        return (a.channels, self.frames, a.mel_bins, a.frame_columns)

    # ------------------------------------------------------------------ pieces
    def embed(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Token streams ``b nv dv`` and ``b na da`` (module doc)."""
        t = video.shape[2]
        v = self.video_embed(rearrange(video, "b c t h w -> (b t) c h w")) + self.video_pos.to(video.dtype)
        a = rearrange(audio, "b c t f (k p) -> b (t k) (c f p)", p=self.audio_cfg.patch)
        return rearrange(v, "(b t) n d -> b (t n) d", t=t), self.audio_embed(a)

    def condition(self, t_video: Tensor, t_audio: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-stream conditioning ``TimestepEmbedder(t * scale) + LabelEmbedder(y)``; labels are
        dropped for both streams together in training."""
        if self.training:
            y = self.y_video.drop_labels(y)
        c_video = self.t_video(t_video.float() * self.timestep_scale) + self.y_video(y, train=False)
        c_audio = self.t_audio(t_audio.float() * self.timestep_scale) + self.y_audio(y, train=False)
        return c_video, c_audio

    def forward_blocks(self, video: Tensor, audio: Tensor, c_video: Tensor, c_audio: Tensor
                       ) -> tuple[Tensor, Tensor]:
        """The block stack alone: where step caches (:mod:`avblocks.dit.stream_cache`) hook in."""
        for block in self.blocks:
            video, audio = block(video, audio, c_video, c_audio, self.video_time, self.audio_time, self.rotary)
        return video, audio

    def unembed(self, video: Tensor, audio: Tensor, c_video: Tensor, c_audio: Tensor) -> tuple[Tensor, Tensor]:
        """Final layers and un-patching: the clean estimates ``b cv t h w`` and ``b ca t f w``."""
        p, (gh, gw) = self.video_cfg.patch, self.grid
        v = rearrange(self.final_video(video, c_video), "b (t h w) (p q c) -> b c t (h p) (w q)",
                      t=self.frames, h=gh, w=gw, p=p, q=p)
        a = rearrange(self.final_audio(audio, c_audio), "b (t k) (c f p) -> b c t f (k p)",
                      t=self.frames, c=self.audio_cfg.channels, p=self.audio_cfg.patch)
        return v, a

    def _check(self, video: Tensor, audio: Tensor, y: Tensor) -> None:
        if tuple(video.shape[1:]) != self.video_shape() or tuple(audio.shape[1:]) != self.audio_shape():
            raise ValueError(f"video {tuple(video.shape)} / audio {tuple(audio.shape)} do not match the model's "
                             f"(b, {', '.join(map(str, self.video_shape()))}) / "
                             f"(b, {', '.join(map(str, self.audio_shape()))})")
        if not torch.compiler.is_compiling():
            rows = self.y_video.embedding_table.num_embeddings
            if bool(((y < 0) | (y >= rows)).any()):
                raise ValueError(f"labels {y.tolist()} out of range 0..{rows - 1} "
                                 f"({self.num_classes} classes, null label {self.null_label})")

    @shapecheck
    def predict_clean(
        self,
        video: VideoClip, audio: AudioClip, t_video: ClipTimes, t_audio: ClipTimes, y: Labels
    ) -> tuple[VideoClip, AudioClip]:
        """The network's clean estimates of both streams at times ``t_video``, ``t_audio``."""
        self._check(video, audio, y)
        c_video, c_audio = self.condition(t_video, t_audio, y)
        v, a = self.embed(video, audio)
        v, a = self.forward_blocks(v, a, c_video.to(v.dtype), c_audio.to(a.dtype))
        return self.unembed(v, a, c_video.to(v.dtype), c_audio.to(a.dtype))

    @shapecheck
    def forward(
        self,
        video: VideoClip, audio: AudioClip, t_video: ClipTimes, t_audio: ClipTimes, y: Labels
    ) -> tuple[VideoClip, AudioClip]:
        """Flow velocities ``(x_t - x0) / max(t, 0.05)`` of both streams (module doc)."""
        clean_video, clean_audio = self.predict_clean(video, audio, t_video, t_audio, y)
        return (_velocity(video, clean_video, t_video), _velocity(audio, clean_audio, t_audio))


def _velocity(x_t: Tensor, x0: Tensor, t: Tensor) -> Tensor:
    return (x_t - x0) / t.to(x_t.dtype).clamp_min(MIN_TIME).reshape(-1, *([1] * (x_t.ndim - 1)))
