"""Train the ProAV-DiT denoiser (ST-DiT) on the latents of a trained MDSA autoencoder.

    python -m recipes.proav_dit.train_dit --config recipes/proav_dit/configs/dit_tiny.yaml [key=value ...]

``autoencoder`` names an autoencoder run folder (``train_autoencoder``'s output); its data
config is reused, and its latents are encoded once and cached in memory-mapped shards
(:mod:`recipes.proav_dit.codec`), which ``data.num_workers`` loader processes read.

Objective: rectified flow on the tri-plane latent (``model.layout``: the stacked canvas
``b c 6 s s`` for :class:`~avblocks.dit.STDiT`, or the packed ``b c L`` for
:class:`~avblocks.dit.PackedSTDiT`) with *per-plane* timesteps.
Each training example is, at random:

- joint (probability ``1 - p_audio_to_video - p_video_to_audio``): all six planes share one
  noise level;
- audio-to-video: the three audio planes are held clean (timestep 0, excluded from the
  loss) and the video planes are noised;
- video-to-audio: the converse.

So the one model generates jointly and does both conditional tasks by holding one modality's
planes clean at sampling time (ProAV-DiT's per-plane timesteps). The noise is zero on the
canvas padding (the padded cells stay exactly 0 along the whole path, and their target
velocity is 0), so padding never looks like signal; a packed latent has none. Per-plane
times and masks reach the diffusion helpers through ``codec.frame_values`` (one value per
cell of a packed latent). Class labels are dropped with
``model.class_dropout`` for classifier-free guidance.

Writes to ``run.output_dir``: ``config.yaml``, ``checkpoints/`` (atomic, exact resume),
``log.jsonl``, ``model/`` (EMA weights, ``config.json + model.safetensors``) and
``pipeline/``: the self-contained :class:`~avblocks.pipelines.ProAVDiTPipeline` folder (the
autoencoder, the denoiser, the clip spec and the ``sample`` defaults), which
``avblocks sample`` and ``ProAVDiTPipeline.from_pretrained`` load.

Distributed / faults: as in :mod:`recipes.proav_dit.train_autoencoder` (``torchrun`` + DDP,
``optim.batch_size`` global, ``optim.grad_accum`` micro-batches, ``run.on_nonfinite``);
:func:`validate` checks the cross-field constraints before anything is built.
"""

from dataclasses import asdict
from pathlib import Path

import torch

from avblocks.codecs import TriPlaneCodec
from avblocks.device import HOST
from avblocks.diffusion import FlowMatching
from avblocks.diffusion.ema import EMA
from avblocks.diffusion.flow import clean_frame_weight
from avblocks.dit.blocks import STDiTBlock
from avblocks.dit.packed_stdit import PackedSTDiT
from avblocks.dit.plane_pack import PlanePack
from avblocks.dit.plane_stack import PlaneStack
from avblocks.dit.stdit import STDiT
from avblocks.latent.planes import AUDIO_PLANES, VIDEO_PLANES
from avblocks.pipelines import FlowSampling, ProAVDiTPipeline
from recipes.common import distributed as dist_utils
from recipes.common import require
from recipes.common.config import load_config
from recipes.common.estimates import require_model_fits
from recipes.common.latent_cache import RowsDataset
from recipes.common.loading import step_loader
from recipes.common.loop import (
    check_optim,
    ema_model,
    fit,
    make_optimizer,
    run_entry_point,
    start_run,
)
from recipes.common.speed import apply_speed, attention
from recipes.common.watch import Probes
from recipes.proav_dit.codec import cached_latents, load_codec
from recipes.proav_dit.config import AutoencoderRecipe, DiTRecipe


def validate(cfg: DiTRecipe, *, world_size: int = 1) -> None:
    """Cross-field constraints, checked before anything is built; the error names the fields.

    Each field's own bounds are declared on it (:mod:`avblocks.config_rules`). The latent
    canvas is padded to a multiple of ``model.patch`` (:class:`TriPlaneCodec`), so the patch
    always divides it; what can be impossible is checked here, and then (once the
    autoencoder folder is known to be one) whether training the denoiser fits in memory.
    """
    m, d, o = cfg.model, cfg.diffusion, cfg.optim
    require(m.hidden_size % m.num_heads == 0,
            f"model.num_heads ({m.num_heads}) must divide model.hidden_size ({m.hidden_size})")
    require(m.time_window is None or m.layout == "packed",
            f"model.time_window ({m.time_window}) needs model.layout packed (it is {m.layout!r})")
    require(m.hidden_size % 4 == 0,
            f"model.hidden_size ({m.hidden_size}) must be divisible by 4 (2D sin-cos position table)")
    require(d.p_audio_to_video + d.p_video_to_audio <= 1.0,
            f"diffusion.p_audio_to_video + diffusion.p_video_to_audio "
            f"({d.p_audio_to_video} + {d.p_video_to_audio}) must be <= 1")
    check_optim(o, world_size=world_size)
    require((Path(cfg.autoencoder) / "config.yaml").is_file() and (Path(cfg.autoencoder) / "model").is_dir(),
            f"autoencoder ({cfg.autoencoder}) must be a trained autoencoder run folder (config.yaml and "
            "model/); train one with proav_dit.train_autoencoder")
    trained = load_config(AutoencoderRecipe, Path(cfg.autoencoder) / "config.yaml")
    layout = TriPlaneCodec.plane_layout(trained.data.spec(), trained.model, m.patch, m.layout)
    require_model_fits("model.*", lambda: build_denoiser(cfg, layout, trained.data.num_classes))


def build_denoiser(cfg: DiTRecipe, layout: PlaneStack | PlanePack, num_classes: int) -> STDiT | PackedSTDiT:
    """The denoiser for latents in ``layout`` (a codec's, or :meth:`TriPlaneCodec.plane_layout`
    from the configs alone)."""
    m = cfg.model
    width = dict(patch=m.patch, hidden_size=m.hidden_size, depth=m.depth, num_heads=m.num_heads,
                 mlp_ratio=m.mlp_ratio, num_classes=num_classes, class_dropout=m.class_dropout)
    if m.layout == "packed":
        return PackedSTDiT(in_channels=layout.channels, planes=layout.shapes, across=m.across,
                           time_window=m.time_window, **width)
    return STDiT(in_channels=layout.channels, side=layout.side, frames=layout.num_planes, **width)


def clean_masks(batch: int, p_a2v: float, p_v2a: float, generator: torch.Generator | None = None,
                device: torch.device = HOST) -> torch.Tensor:
    """``b 6`` bool on ``device``: which planes each example holds clean (see the module docstring)."""
    u = torch.rand(batch, generator=generator, device=device)
    mask = torch.zeros(batch, 6, dtype=torch.bool, device=device)
    mask[u < p_a2v, AUDIO_PLANES] = True
    mask[(u >= p_a2v) & (u < p_a2v + p_v2a), VIDEO_PLANES] = True
    return mask


def build_pipeline(cfg: DiTRecipe, codec: TriPlaneCodec, model: STDiT | PackedSTDiT) -> ProAVDiTPipeline:
    """The pipeline the run saves (and samples while it trains), with ``cfg.sample``'s defaults."""
    return ProAVDiTPipeline(codec, model.eval(), sampling=FlowSampling(**asdict(cfg.sample)))


def watch_probes(cfg: DiTRecipe, codec: TriPlaneCodec, data, model: STDiT | PackedSTDiT, ema: EMA,
                 loss, device: torch.device) -> Probes:
    """The validation loss (``loss`` on ``run.eval_clips`` held-out clips' latents) and the
    samples (``run.samples`` clips, one class after another, through :func:`build_pipeline`)."""
    r = cfg.run
    held = None
    if r.eval_every > 0 and r.eval_clips > 0:
        video, audio, labels = data.model_inputs(data.held_out_batch(r.eval_clips))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the training stream stays as it was
            held = codec.encode_frames(video.to(device), audio.to(device)), labels.to(device)

    def samples():
        labels = torch.arange(r.samples) % data.num_classes
        with ema.swapped(model):
            return build_pipeline(cfg, codec, model)(labels=labels, seed=r.seed, progress=False)

    return Probes(validation=None if held is None else lambda: {"total": loss(model, *held)}, samples=samples)


def train(cfg: DiTRecipe) -> dict:
    ctx, out = start_run(cfg, validate)
    device = ctx.device
    torch.manual_seed(cfg.run.seed)
    codec, data = load_codec(cfg.autoencoder, patch=cfg.model.patch, layout=cfg.model.layout)
    data.config.num_workers = cfg.data.num_workers
    codec.to(device)
    cache_options = dict(shard_clips=cfg.data.shard_clips)
    if ctx.is_main:  # rank 0 encodes and writes the cache; the others read it
        cache = cached_latents(codec, data, cfg.autoencoder, progress=cfg.run.progress, **cache_options)
    dist_utils.barrier()
    if not ctx.is_main:
        cache = cached_latents(codec, data, cfg.autoencoder, progress=False, **cache_options)
    rows = RowsDataset(cache)
    valid = codec.valid_mask[None, None].to(device, cache["latents"].dtype)  # 1 1 6 s s (canvas) / 1 1 L (packed)

    model = build_denoiser(cfg, codec.layout, data.num_classes).to(device)
    o, d = cfg.optim, cfg.diffusion
    flow = FlowMatching(time_distribution=d.time_distribution, shift=d.shift)
    apply_speed(model, cfg.model, sharded=ctx.enabled and cfg.run.parallel == "fsdp")
    net = dist_utils.wrap_model(model, ctx, cfg.run.parallel, shard=(STDiTBlock,), precision=o.precision)
    if ctx.enabled:  # same init everywhere (above); from here each rank draws its own noise
        torch.manual_seed(dist_utils.rank_seed(cfg.run.seed, ctx.rank))
    ema = EMA(model, decay=cfg.optim.ema_decay, warmup=True)
    opt, sched = make_optimizer(model.parameters(), o)
    parts = {"model": model, "ema": ema, "optimizer": opt, "scheduler": sched}

    def loss(denoiser: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = x0.shape[0]
        t = codec.frame_values(flow.sample_timesteps(b, device=device)[:, None].expand(b, 6).contiguous())
        noise = torch.randn_like(x0) * valid
        mask = codec.frame_values(clean_masks(b, d.p_audio_to_video, d.p_video_to_audio, device=device))
        weight = clean_frame_weight(t, x0.ndim) if d.loss_weighting == "clean" else None
        return flow.loss(denoiser, x0, t=t, noise=noise, clean_mask=mask, model_kwargs={"y": y}, weight=weight)

    def micro_step(batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return {"total": loss(net, batch["latents"], batch["labels"])}

    with attention(cfg.model):
        fitted = fit(desc="denoiser", out=out, ctx=ctx, run=cfg.run, optim=o, parts=parts, net=net,
                     batches=lambda start: step_loader(rows, batch_size=o.batch_size, total_steps=o.steps,
                                                       start_step=start, seed=cfg.run.seed, ctx=ctx,
                                                       num_workers=cfg.data.num_workers),
                     micro_step=micro_step, probes=watch_probes(cfg, codec, data, model, ema, loss, device))
    dist_utils.barrier()
    result = fitted.summary()
    model = ema_model(model, ema, ctx, cfg.run.parallel,
                      rebuild=lambda: build_denoiser(cfg, codec.layout, data.num_classes))
    if ctx.is_main:
        model.save_pretrained(out / "model")
        build_pipeline(cfg, codec, model).save_pretrained(out / "pipeline")
    dist_utils.barrier()
    return result


def main(argv=None) -> dict:
    return run_entry_point(DiTRecipe, train, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
