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
from avblocks.diffusion.flow import clean_frame_weight
from avblocks.diffusion.schedules import ReadSchedule
from avblocks.dit.read_denoiser import ReadDenoiser
from avblocks.pipelines import SoundingVideo
from avblocks.pipelines.read import ReadPipeline, ReadSampling
from recipes.common.data import ClipData
from recipes.common.estimates import require_clips_fit, require_model_fits
from recipes.common.loop import fit, make_optimizer, run_entry_point, start_run, step_batches
from recipes.common.speed import apply_speed, attention
from recipes.common.watch import Probes
from recipes.read_a2v import config
from recipes.read_a2v.config import ReadRecipe
from recipes.read_a2v.video_embedder import FrameVideoEmbedder

__all__ = ["build_codec", "build_denoiser", "build_schedule", "loss_weight", "main", "save_pipeline", "train", "validate"]

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
                        audio_dim=cfg.codec.code_dim, window=m.window, audio_modulation=m.audio_modulation)


def build_schedule(cfg: ReadRecipe) -> ReadSchedule:
    s = cfg.schedule
    return ReadSchedule(frames=1 + s.motion_frames, motion_frames=1, lag=s.lag,
                        steps=s.sample_steps, time_distribution=s.time_distribution,
                        logit_mean=s.logit_mean, logit_std=s.logit_std, shift=s.shift)


def render_clips(data: ClipData, device: torch.device, held_out: int = 0) -> dict[str, torch.Tensor]:
    """Every training clip (or the first ``held_out`` held-out clips) as model inputs on
    ``device``: video ``N 3 T h w``, audio frames ``N 1 T f w``; held-out clips keep their
    ``waveform`` too (on the CPU)."""
    if held_out:
        batch = data.held_out_batch(held_out)
    else:
        batch = torch.utils.data.default_collate([data.dataset[i] for i in range(len(data.dataset))])
    video, audio, _ = data.to(device).model_inputs(to_device(batch, device))
    return {"video": video, "audio": audio} | ({"waveform": batch["audio"]} if held_out else {})


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of step ``step``'s windows, times and noise, on the model's device."""
    return seeded_generator(device, seed * 1_000_003 + step)


def validation_of(cfg: ReadRecipe, held: dict | None, loss) -> Probes:
    """The validation probe: ``loss(indices)`` over the first ``run.eval_clips`` held-out clips."""
    if held is None or cfg.run.eval_every == 0 or cfg.run.eval_clips == 0:
        return Probes()
    return Probes(validation=lambda: loss(list(range(min(cfg.run.eval_clips, len(held["video"]))))))


def train_codec(cfg: ReadRecipe, clips: dict, out: Path, ctx, held: dict | None = None) -> dict:
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

    def losses(source: dict, index: list[int]) -> dict[str, torch.Tensor]:
        audio, video = source["audio"][index], source["video"][index]
        codes, recon = codec(audio)
        reconstruction = F.mse_loss(recon, audio)
        contrastive = frame_infonce(codes, video_head(video), c.temperature)
        return {"total": reconstruction + c.contrastive_weight * contrastive,
                "reconstruction": reconstruction, "contrastive": contrastive}

    fitted = fit(desc="audio codec", out=out, ctx=ctx, run=cfg.run, optim=o, parts=parts,
                 net=model, batches=step_batches(len(clips["audio"]), o, cfg.run.seed, ctx),
                 micro_step=lambda index, step: losses(clips, index),
                 probes=validation_of(cfg, held, lambda index: losses(held, index)))
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


def loss_weight(x0: torch.Tensor, t: torch.Tensor, *, object_weight: float, clean_loss: bool,
                min_time: float = 0.05) -> torch.Tensor | None:
    """Per-element weight of the velocity error of ``x0 b c t h w`` at frame times ``t b t``.

    ``object_weight``: a pixel whose colour differs from the reference frame's (frame 0) by more
    than 0.1 weighs ``1 + object_weight``: the object where it is and where it was, the only
    pixels the audio can tell anything about (a few percent of the frame).
    ``clean_loss``: frame weight ``max(t, min_time)^2``, which turns the x-prediction's velocity
    error ``(x0 - clean) / t`` into the clean frame's error: the noisy levels, where the
    object's place is decided, count as much as the last details. None: no weighting.
    """
    weight = None
    if object_weight > 0:
        moved = (x0 - x0[:, :, :1]).abs().amax(dim=1, keepdim=True) > 0.1  # b 1 t h w
        weight = 1.0 + object_weight * moved.to(x0.dtype)
    if clean_loss:
        per_frame = clean_frame_weight(t.to(x0.dtype), x0.ndim, min_time=min_time)
        weight = per_frame if weight is None else weight * per_frame
    return weight


def train_denoiser(cfg: ReadRecipe, clips: dict, codec: FrameCodeCodec, out: Path, ctx,
                   held: dict | None = None) -> dict:
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

    def loss(source: dict, source_codes: torch.Tensor, index: list[int], g: torch.Generator,
             dropout: float) -> dict[str, torch.Tensor]:
        x0, audio = training_example(source, index, source_codes, motion, g)
        t, mask = schedule.training_timesteps(x0.shape[0], generator=g, device=g.device)
        noise = torch.randn(x0.shape, generator=g, device=g.device)
        kwargs = {"audio": audio}
        if dropout > 0:
            kwargs["drop_audio"] = torch.rand(x0.shape[0], generator=g, device=g.device) < dropout
        weight = loss_weight(x0, t, object_weight=cfg.model.object_weight, clean_loss=cfg.model.clean_loss,
                             min_time=model.min_time)
        return {"total": flow.loss(model, x0, t=t, noise=noise, clean_mask=mask, model_kwargs=kwargs, weight=weight)}

    def micro_step(index: list[int], step: int) -> dict[str, torch.Tensor]:
        return loss(clips, codes, index, step_generator(cfg.run.seed, step, ctx.device), cfg.model.audio_dropout)

    probes = Probes()
    if held is not None:  # every held-out clip, the same windows and noise each time, no dropout
        with torch.no_grad():
            held_codes = codec.codes_of_frames(held["audio"])
        probes = validation_of(cfg, held, lambda index: loss(held, held_codes, index,
                                                             step_generator(cfg.run.seed, -1, ctx.device), 0.0))
        probes.samples = lambda: read_samples(cfg, codec, model, ema, held)
    with attention(cfg.model):
        fitted = fit(desc="denoiser", out=out, ctx=ctx, run=cfg.run, optim=o, parts=parts, net=model,
                     batches=step_batches(len(codes), o, cfg.run.seed, ctx), micro_step=micro_step,
                     probes=probes)
    ema.copy_to(model)
    if ctx.is_main:
        model.save_pretrained(out / "model")
    return {"steps": fitted.steps, "minutes": fitted.minutes, "losses": fitted.losses}


def build_pipeline(cfg: ReadRecipe, codec: FrameCodeCodec, denoiser: ReadDenoiser) -> ReadPipeline:
    """The pipeline of the trained models with the config's sampling settings."""
    s = cfg.schedule
    return ReadPipeline(codec, denoiser, sampling=ReadSampling(steps=s.sample_steps, guidance=s.guidance,
                                                               lag=s.lag, shift=s.shift))


def save_pipeline(cfg: ReadRecipe, codec: FrameCodeCodec, denoiser: ReadDenoiser, folder: Path) -> Path:
    """Stage 3: the trained models and the sampling settings as one pipeline folder."""
    return build_pipeline(cfg, codec, denoiser).save_pretrained(folder)


def read_samples(cfg: ReadRecipe, codec: FrameCodeCodec, denoiser: ReadDenoiser, ema: EMA,
                 held: dict) -> SoundingVideo:
    """The pipeline's own call with the EMA weights on the first ``run.samples`` held-out clips:
    each clip's sound and first frame in, its video out; joined into one batch."""
    pipe = build_pipeline(cfg, codec, denoiser)
    with ema.swapped(denoiser):
        clips = [pipe(held["waveform"][i], held["video"][i, :, 0], seed=cfg.run.seed)
                 for i in range(min(cfg.run.samples, len(held["video"])))]
    return SoundingVideo(torch.cat([c.video for c in clips]), torch.cat([c.audio for c in clips]), clips[0].spec)


def train(cfg: ReadRecipe) -> dict:
    ctx, out = start_run(cfg, validate, stages=STAGES)
    data = ClipData(cfg.data)
    clips = render_clips(data, ctx.device)
    r = cfg.run
    held_clips = max(r.eval_clips if r.eval_every else 0, r.samples)
    held = render_clips(data, ctx.device, held_out=held_clips) if held_clips else None
    result = {"codec": train_codec(cfg, clips, out / "codec", ctx, held)}
    codec = FrameCodeCodec(data.spec, FrameAudioCodec.from_pretrained(out / "codec" / "model"))
    result["denoiser"] = train_denoiser(cfg, clips, codec, out / "denoiser", ctx, held)
    denoiser = ReadDenoiser.from_pretrained(out / "denoiser" / "model")
    result["pipeline"] = str(save_pipeline(cfg, codec, denoiser, out / "pipeline"))
    return result


def main(argv=None) -> dict:
    return run_entry_point(ReadRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
