"""Train the READ-style audio-to-video system on the synthetic sounding-video set.

    python -m recipes.read_a2v.train --config recipes/read_a2v/configs/tiny.yaml [key=value ...]

Two training stages and the folder they make, one entry point (each stage resumes exactly on
its own):

1. **audio codec** (``codec_optim``): :class:`avblocks.audio.frame_codes.FrameAudioCodec` on the
   normalised video-like log-mel of each clip, loss ``MSE(reconstruction) + contrastive_weight
   * frame_infonce(codes, video embeddings)``; the video embeddings come from a small
   :class:`~recipes.read_a2v.video_embedder.FrameVideoEmbedder` trained alongside and then dropped.
   Writes ``codec/`` (``log.jsonl``, ``checkpoints/``, ``model/`` = EMA weights).
2. **denoiser** (``optim``): :class:`~avblocks.dit.read_denoiser.ReadDenoiser` with the codec frozen.
   A training example is cut from a clip of ``data.num_frames`` frames: a *reference* frame
   at a random index and a window of ``schedule.motion_frames`` consecutive frames at a random
   start; the audio codes of the window (the codec runs causally over the whole clip, so a
   code also sees the audio before the window, as in long generation). Per-frame times come
   from :class:`avblocks.diffusion.schedules.ReadSchedule` (reference clean, first motion
   frame one level below the rest), and the loss is :meth:`FlowMatching.loss` with that
   clean mask. With probability ``model.audio_dropout`` an example hears no audio (the
   learned null code), for classifier-free guidance (``schedule.guidance``) at sampling.
   Writes ``denoiser/`` likewise.
3. **pipeline**: the two trained models and the sampling settings (``schedule.sample_steps``,
   ``guidance``, ``lag``, ``shift``) as one self-contained folder, ``pipeline/``
   (:class:`avblocks.pipelines.ReadPipeline`): what ``recipes.read_a2v.generate`` and
   ``evaluate`` load, and what a user drives with their own sound and picture.

Randomness: the choice of windows, timesteps and noise of step ``s`` comes from a generator
seeded with ``(run.seed, s)`` on the run's device, so a resumed run repeats an uninterrupted
one exactly. The loop itself (resume, EMA, checkpoints, progress bar, ``run.max_minutes``) is
:func:`recipes.common.loop.fit`. The synthetic clips are rendered once onto the run's device
(``run.device``; the set is small by construction). The configs are in
:mod:`recipes.read_a2v.config`.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from avblocks.audio.frame_codes import FrameAudioCodec, frame_infonce
from avblocks.codecs import FrameCodeCodec
from avblocks.device import seeded_generator, to_device
from avblocks.diffusion import FlowMatching
from avblocks.diffusion.ema import EMA
from avblocks.diffusion.schedules import ReadSchedule
from avblocks.dit.read_denoiser import ReadDenoiser
from avblocks.pipelines.read import ReadPipeline, ReadSampling
from recipes.common.data import ClipData
from recipes.common.estimates import require_clips_fit, require_model_fits
from recipes.common.loop import fit, make_optimizer, run_entry_point, start_run, step_batches
from recipes.common.speed import apply_speed, attention
from recipes.read_a2v import config
from recipes.read_a2v.config import ReadRecipe
from recipes.read_a2v.video_embedder import FrameVideoEmbedder

__all__ = ["build_codec", "build_denoiser", "build_schedule", "main", "save_pipeline", "train", "validate"]

STAGES = {"codec/checkpoints": "codec_optim", "denoiser/checkpoints": "optim"}
"""Each stage's checkpoint folder and the optim section counting its steps."""


def validate(cfg: ReadRecipe, world_size: int = 1) -> None:
    """:func:`recipes.read_a2v.config.validate`, then whether the run fits in memory: every
    clip is rendered once and kept, and both models train."""
    config.validate(cfg, world_size)
    require_clips_fit("data.num_clips (rendered once and kept)", cfg.data.num_clips, cfg.data)
    require_model_fits("codec.*", lambda: build_codec(cfg))
    require_model_fits("model.*", lambda: build_denoiser(cfg))


def build_codec(cfg: ReadRecipe) -> FrameAudioCodec:
    d, c = cfg.data, cfg.codec
    return FrameAudioCodec(mel_bins=d.n_mels, columns_per_frame=d.spec().frame_columns,
                           strides=tuple(c.strides), hidden_channels=c.hidden_channels,
                           code_dim=c.code_dim)


def build_denoiser(cfg: ReadRecipe) -> ReadDenoiser:
    m, d = cfg.model, cfg.data
    return ReadDenoiser(in_channels=3, size=d.size, frames=1 + cfg.schedule.motion_frames,
                        patch=m.patch, hidden_size=m.hidden_size, depth=m.depth,
                        num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
                        audio_dim=cfg.codec.code_dim, window=m.window)


def build_schedule(cfg: ReadRecipe) -> ReadSchedule:
    s = cfg.schedule
    return ReadSchedule(frames=1 + s.motion_frames, motion_frames=1, lag=s.lag,
                        steps=s.sample_steps, time_distribution=s.time_distribution,
                        logit_mean=s.logit_mean, logit_std=s.logit_std, shift=s.shift)


def render_clips(data: ClipData, device: torch.device) -> dict[str, torch.Tensor]:
    """Every training clip as model inputs on ``device``: video ``N 3 T h w``, audio frames
    ``N 1 T f w``."""
    items = [data.dataset[i] for i in range(len(data.dataset))]
    video, audio, _ = data.to(device).model_inputs(to_device(torch.utils.data.default_collate(items), device))
    return {"video": video, "audio": audio}


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of step ``step``'s windows, times and noise, on the model's device."""
    return seeded_generator(device, seed * 1_000_003 + step)


def train_codec(cfg: ReadRecipe, clips: dict, out: Path, ctx) -> dict:
    """Stage 1 (see the module doc); returns the fit summary and saves ``out/model``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.run.seed)
    codec = build_codec(cfg)
    video_head = FrameVideoEmbedder(dim=cfg.codec.code_dim, hidden_channels=cfg.codec.video_hidden)
    model = torch.nn.ModuleDict({"codec": codec, "video": video_head}).to(ctx.device)
    o, c = cfg.codec_optim, cfg.codec
    opt, sched = make_optimizer(model.parameters(), o)
    ema = EMA(model, decay=o.ema_decay, warmup=True)
    parts = {"model": model, "ema": ema, "optimizer": opt, "scheduler": sched}

    def micro_step(index: list[int], step: int) -> dict[str, torch.Tensor]:
        audio, video = clips["audio"][index], clips["video"][index]
        codes, recon = codec(audio)
        reconstruction = F.mse_loss(recon, audio)
        contrastive = frame_infonce(codes, video_head(video), c.temperature)
        return {"total": reconstruction + c.contrastive_weight * contrastive,
                "reconstruction": reconstruction, "contrastive": contrastive}

    fitted = fit(desc="audio codec", out=out, ctx=ctx, run=cfg.run, optim=o, parts=parts,
                 net=model, batches=step_batches(len(clips["audio"]), o, cfg.run.seed, ctx),
                 micro_step=micro_step)
    ema.copy_to(model)
    if ctx.is_main:
        codec.save_pretrained(out / "model")
    return {"steps": fitted.steps, "minutes": fitted.minutes, "losses": fitted.losses}


def training_example(clips: dict, index: list[int], codes: torch.Tensor, motion: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0 b 3 (1+motion) h w, audio codes b motion d)``: reference frame + a motion window,
    drawn with ``generator`` on its device (the clips' and codes' device)."""
    video = clips["video"][index]
    b, total, device = video.shape[0], video.shape[2], generator.device
    ref = torch.randint(0, total, (b,), generator=generator, device=device)
    start = torch.randint(0, total - motion + 1, (b,), generator=generator, device=device)
    rows = torch.arange(b, device=device)
    window = start[:, None] + torch.arange(motion, device=device)[None, :]  # b motion
    frames = video.permute(0, 2, 1, 3, 4)  # b T 3 h w
    x0 = torch.cat([frames[rows, ref][:, None], frames[rows[:, None], window]], dim=1)
    return x0.permute(0, 2, 1, 3, 4).contiguous(), codes[index][rows[:, None], window]


def train_denoiser(cfg: ReadRecipe, clips: dict, codec: FrameCodeCodec, out: Path, ctx) -> dict:
    """Stage 2 (see the module doc); returns the fit summary and saves ``out/model``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.run.seed)
    model = apply_speed(build_denoiser(cfg).to(ctx.device), cfg.model)
    codes = codec.to(ctx.device).codes_of_frames(clips["audio"])
    schedule = build_schedule(cfg)
    flow = FlowMatching()
    o = cfg.optim
    opt, sched = make_optimizer(model.parameters(), o)
    ema = EMA(model, decay=o.ema_decay, warmup=True)
    parts = {"model": model, "ema": ema, "optimizer": opt, "scheduler": sched}
    motion = cfg.schedule.motion_frames

    def micro_step(index: list[int], step: int) -> dict[str, torch.Tensor]:
        g = step_generator(cfg.run.seed, step, ctx.device)
        x0, audio = training_example(clips, index, codes, motion, g)
        t, mask = schedule.training_timesteps(x0.shape[0], generator=g, device=g.device)
        noise = torch.randn(x0.shape, generator=g, device=g.device)
        kwargs = {"audio": audio}
        if cfg.model.audio_dropout > 0:
            kwargs["drop_audio"] = torch.rand(x0.shape[0], generator=g, device=g.device) < cfg.model.audio_dropout
        loss = flow.loss(model, x0, t=t, noise=noise, clean_mask=mask, model_kwargs=kwargs)
        return {"total": loss}

    with attention(cfg.model):
        fitted = fit(desc="denoiser", out=out, ctx=ctx, run=cfg.run, optim=o, parts=parts, net=model,
                     batches=step_batches(len(codes), o, cfg.run.seed, ctx), micro_step=micro_step)
    ema.copy_to(model)
    if ctx.is_main:
        model.save_pretrained(out / "model")
    return {"steps": fitted.steps, "minutes": fitted.minutes, "losses": fitted.losses}


def save_pipeline(cfg: ReadRecipe, codec: FrameCodeCodec, denoiser: ReadDenoiser, folder: Path) -> Path:
    """Stage 3: the trained models and the sampling settings as one pipeline folder."""
    s = cfg.schedule
    sampling = ReadSampling(steps=s.sample_steps, guidance=s.guidance, lag=s.lag, shift=s.shift)
    return ReadPipeline(codec, denoiser, sampling=sampling).save_pretrained(folder)


def train(cfg: ReadRecipe) -> dict:
    ctx, out = start_run(cfg, validate, stages=STAGES)
    data = ClipData(cfg.data)
    clips = render_clips(data, ctx.device)
    result = {"codec": train_codec(cfg, clips, out / "codec", ctx)}
    codec = FrameCodeCodec(data.spec, FrameAudioCodec.from_pretrained(out / "codec" / "model"))
    result["denoiser"] = train_denoiser(cfg, clips, codec, out / "denoiser", ctx)
    denoiser = ReadDenoiser.from_pretrained(out / "denoiser" / "model")
    result["pipeline"] = str(save_pipeline(cfg, codec, denoiser, out / "pipeline"))
    return result


def main(argv=None) -> dict:
    return run_entry_point(ReadRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
