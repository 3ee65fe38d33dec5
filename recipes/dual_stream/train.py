"""Train the dual-stream DiT (two streams, a coupling) on clips; save its pipeline folder.

    avblocks run dual_stream.train --config tiny [key=value ...]
    avblocks run dual_stream.train --config tiny model.coupling.kind=joint run.output_dir=outputs/joint

The clips of ``data`` are made into model inputs once (pixel frames and normalised video-like
audio, :class:`~avblocks.codecs.pixel_mel.PixelMelCodec`) and kept in memory.

Objective: rectified flow with **one time per stream**. Each training clip is, at random:

- joint (probability ``1 - p_audio_to_video - p_video_to_audio``): both streams at one time;
- audio-to-video: the audio held clean (time 0, exactly the data), no audio loss;
- video-to-audio: the converse.

So one model generates jointly and does both conditional tasks (the pipeline holds a given
stream clean). The loss is the mean squared velocity error of each stream over its clips
that are not held clean, the two streams' means added: each stream weighs the same whatever
its number of values. Labels are dropped (both streams at once) with
``model.class_dropout`` for classifier-free guidance.

Writes to ``run.output_dir``: ``config.yaml``, ``checkpoints/`` (atomic, exact resume),
``log.jsonl``, ``model/`` (EMA weights) and ``pipeline/``: the self-contained
:class:`~avblocks.pipelines.DualStreamPipeline` folder ``avblocks sample`` loads.
"""

from dataclasses import asdict

import torch
from tqdm import tqdm

from avblocks.codecs.pixel_mel import PixelMelCodec
from avblocks.diffusion import FlowMatching
from avblocks.diffusion.ema import EMA
from avblocks.dit.dual_stream import (
    AudioStreamConfig,
    DualStreamBlock,
    DualStreamDiT,
    VideoStreamConfig,
)
from avblocks.pipelines import DualStreamPipeline, FlowSampling
from recipes.common import distributed as dist_utils
from recipes.common.data import ClipData
from recipes.common.loop import (
    ema_model,
    fit,
    make_optimizer,
    run_entry_point,
    start_run,
    step_batches,
)
from recipes.dual_stream.config import DualStreamRecipe, validate

__all__ = ["build_denoiser", "encode_clips", "stream_modes", "stream_loss", "train", "main"]


def build_denoiser(cfg: DualStreamRecipe, data: ClipData) -> DualStreamDiT:
    spec, m = data.spec, cfg.model
    return DualStreamDiT(
        video=VideoStreamConfig(channels=3, size=spec.size, patch=m.video_patch, width=m.video_width),
        audio=AudioStreamConfig(channels=spec.channels, mel_bins=spec.mel.n_mels, frame_columns=spec.frame_columns,
                                patch=m.audio_patch, width=m.audio_width),
        frames=spec.num_frames, fps=spec.fps, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
        num_classes=data.num_classes, class_dropout=m.class_dropout, coupling=m.coupling,
        time_scale=m.time_scale)


def encode_clips(data: ClipData, *, batch_size: int = 64, progress: bool = True) -> dict[str, torch.Tensor]:
    """``{"video": N 3 t h w, "audio": N c t f w, "labels": N}``: every training clip as model input."""
    dataset, parts = data.dataset, {"video": [], "audio": [], "labels": []}
    for start in tqdm(range(0, len(dataset), batch_size), desc="clips", disable=not progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        video, audio, labels = data.model_inputs(torch.utils.data.default_collate(items))
        for key, value in zip(parts, (video, audio, labels)):
            parts[key].append(value)
    return {key: torch.cat(values) for key, values in parts.items()}


def stream_modes(batch: int, p_a2v: float, p_v2a: float, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(video_clean, audio_clean)``, each ``b`` bool: which stream each clip holds clean."""
    u = torch.rand(batch, generator=generator)
    return (u >= p_a2v) & (u < p_a2v + p_v2a), u < p_a2v


def _stream_mse(pred: torch.Tensor, target: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    per_clip = (pred.float() - target.float()).square().flatten(1).mean(dim=1)
    keep = (~clean).to(per_clip.dtype)
    return (per_clip * keep).sum() / keep.sum().clamp_min(1)


def stream_loss(model, flow: FlowMatching, video: torch.Tensor, audio: torch.Tensor, y: torch.Tensor,
                t: torch.Tensor, video_clean: torch.Tensor, audio_clean: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-stream flow-matching losses (module doc) at clip times ``t``; clean streams at time 0."""
    zero = torch.zeros_like(t)
    t_video, t_audio = torch.where(video_clean, zero, t), torch.where(audio_clean, zero, t)
    noise_video, noise_audio = torch.randn_like(video), torch.randn_like(audio)
    x_video = flow.interpolate(video, noise_video, t_video)
    x_audio = flow.interpolate(audio, noise_audio, t_audio)
    v_video, v_audio = model(x_video, x_audio, t_video, t_audio, y)
    losses = {"video": _stream_mse(v_video, flow.velocity(video, noise_video), video_clean),
              "audio": _stream_mse(v_audio, flow.velocity(audio, noise_audio), audio_clean)}
    return {"total": losses["video"] + losses["audio"], **losses}


def train(cfg: DualStreamRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    torch.manual_seed(cfg.run.seed)
    data = ClipData(cfg.data)
    clips = encode_clips(data, progress=cfg.run.progress and ctx.is_main)
    model = build_denoiser(cfg, data)
    o, d = cfg.optim, cfg.diffusion
    flow = FlowMatching(time_distribution=d.time_distribution, shift=d.shift)
    net = dist_utils.wrap_model(model, ctx, cfg.run.parallel, shard=(DualStreamBlock,))
    if ctx.enabled:  # same init everywhere (above); from here each rank draws its own noise
        torch.manual_seed(dist_utils.rank_seed(cfg.run.seed, ctx.rank))
    ema = EMA(model, decay=o.ema_decay, warmup=True)
    opt, sched = make_optimizer(model.parameters(), o)
    parts = {"model": model, "ema": ema, "optimizer": opt, "scheduler": sched}

    def micro_step(index: list[int], step: int) -> dict[str, torch.Tensor]:
        video, audio, y = clips["video"][index], clips["audio"][index], clips["labels"][index]
        video_clean, audio_clean = stream_modes(len(index), d.p_audio_to_video, d.p_video_to_audio)
        return stream_loss(net, flow, video, audio, y, flow.sample_timesteps(len(index)), video_clean, audio_clean)

    fitted = fit(desc="dual-stream DiT", out=out, ctx=ctx, run=cfg.run, optim=o, parts=parts, net=net,
                 batches=step_batches(len(clips["labels"]), o, cfg.run.seed, ctx), micro_step=micro_step)
    dist_utils.barrier()
    result = fitted.summary()
    model = ema_model(model, ema, ctx, cfg.run.parallel, rebuild=lambda: build_denoiser(cfg, data))
    if ctx.is_main:
        model.save_pretrained(out / "model")
        codec = PixelMelCodec(data.spec, inverse=data.audio.inverse)
        DualStreamPipeline(codec, model.eval(), sampling=FlowSampling(**asdict(cfg.sample))).save_pretrained(
            out / "pipeline")
    dist_utils.barrier()
    return result


def main(argv=None) -> dict:
    return run_entry_point(DualStreamRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
