"""The paper-size configs: parameters, FLOPs, activation memory and time per step on an H200.

    python benchmarks/paper_size.py                 # everything (about 10 minutes on 2 CPU cores)
    python benchmarks/paper_size.py --no-check      # counts only (seconds)

The models are built from the shipped configs (``recipes/proav_dit/configs/autoencoder_256.yaml``,
``dit_256_B.yaml``, ``dit_256_L.yaml``; ``recipes/av_dit/configs/autoencoder_256.yaml``,
``av_dit_xl2.yaml``) on PyTorch's meta device (shapes, no memory, no arithmetic), so full size
costs nothing here. Per model:

- **parameters**: all, and those that train (AV-DiT freezes the DiT);
- **FLOPs** counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and
  attention kernels; elementwise work is not counted) for one training sample (forward +
  backward, batch 1) and one sampling step (a forward without gradients: batch 1 for
  ProAV-DiT at guidance 1, batch 2 for AV-DiT's guidance pair), next to the closed formula
  for the transformers (module docstring of each ``*_formula``);
- **activation memory per sample**: the bytes autograd saves for the backward, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` on the meta device at batch 1 and 2 (the
  difference is one sample), in float32, with attention through the fused kernel the GPU
  runs (memory-efficient SDPA: it saves q, k, v, the output and the log-sum-exp, never the
  score matrix). With gradient checkpointing as ``model.gradient_checkpointing=true`` sets it
  the hooks see what the checkpoints keep (each unit's inputs); the unit being recomputed in
  the backward (a block; an AV-DiT layer) adds its own saved tensors, counted the same way
  (the largest unit). bf16 autocast saves the matmuls' inputs in bf16 (about half);
- **check of the counting on the CPU** (``--no-check`` skips it): for ST-DiT-B cut to 1 and 2
  blocks, the peak extra resident memory of a real forward + backward (``VmHWM - VmRSS`` after
  resetting the high-water mark, ``MALLOC_MMAP_THRESHOLD_=65536`` so freed buffers return to
  the system) at batch 1 and 2, one process per point, against the count for the same model;
- **time per training step on one H200**: FLOPs of the config's global batch over an assumed
  model-FLOP utilisation (``--mfu``, default 0.40) of the bf16 matrix rate measured on an H200
  of this workplace (``--matmul-tflops``, default 790: 8192^3 bf16 matmuls on random data,
  /work/.library/device/KINDS.md); the GPU check (``benchmarks/gpu_check.py``) measures the
  real rate. Per clip sampled: 25 steps plus the decode.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("AVBLOCKS_TYPECHECK", "0")  # value checks cannot read meta tensors
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from avblocks.attention.dispatch import Backend, attention_backend, register_backend  # noqa: E402
from avblocks.codecs import TriPlaneCodec  # noqa: E402
from avblocks.dit.av_dit import AVDiT  # noqa: E402
from avblocks.dit.compile import repeated_blocks  # noqa: E402
from avblocks.dit.dit import DIT_PRESETS, DiTConfig  # noqa: E402
from avblocks.dit.stdit import STDiT  # noqa: E402
from avblocks.latent.image_autoencoder import ImageAutoencoder  # noqa: E402
from avblocks.latent.mdsa import MDSA, MDSAConfig  # noqa: E402
from recipes.av_dit import config as av_config  # noqa: E402
from recipes.av_dit.train_autoencoder import reconstruction_losses  # noqa: E402
from recipes.common.config import load_config  # noqa: E402
from recipes.common.speed import SpeedConfig, apply_speed, library_config  # noqa: E402
from recipes.proav_dit import config as proav_config  # noqa: E402

META = torch.device("meta")
PROAV = ROOT / "recipes" / "proav_dit" / "configs"
AVDIT = ROOT / "recipes" / "av_dit" / "configs"


class FusedAttention(Backend):
    """What SDPA runs on a GPU (memory-efficient kernel), callable on the meta device."""

    name = "fused_count"
    constraints = "no mask (the paper-size models use none)"

    def run(self, q, k, v, mask, scale):
        if mask is not None and not mask.is_full:
            raise ValueError("fused_count takes no mask")
        if q.shape[1] != k.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        out = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, scale=scale)
        return out[0]


register_backend(FusedAttention())


@dataclass
class Case:
    """One model at its config: how to build it (``depth`` None = the config's), its inputs,
    and the training loss of one forward."""

    name: str
    config: str
    batch_size: int  # the config's global batch
    sample_batch: int  # one sampling step's batch (2 under classifier-free guidance)
    depth: int | None
    build: object
    inputs: object
    loss: object
    formula: object = None
    decode: object = None  # one-time decode of a sampled clip: () -> FLOPs
    checkpointing: bool = False  # the config's model.gradient_checkpointing


# ------------------------------------------------------------------ ProAV-DiT


def proav_autoencoder_config():
    return load_config(proav_config.AutoencoderRecipe, PROAV / "autoencoder_256.yaml")


def proav_codec(patch) -> TriPlaneCodec:
    cfg = proav_autoencoder_config()
    with META:
        mdsa = MDSA.from_config(library_config(cfg.model, MDSAConfig))
    return TriPlaneCodec(cfg.data.spec(), mdsa, patch=patch)


def mdsa_case() -> Case:
    cfg = proav_autoencoder_config()
    d = cfg.data
    cols = d.spec().frame_columns

    def build(depth=None):
        return MDSA.from_config(library_config(cfg.model, MDSAConfig))

    def inputs(b):
        return (torch.randn(b, 3, d.num_frames, d.size, d.size, device=META),
                torch.randn(b, 1, d.num_frames, d.n_mels, cols, device=META))

    def loss(model, video, audio):
        rec_video, rec_audio, posterior = model(video, audio)
        return (rec_video - video).abs().mean() + (rec_audio - audio).abs().mean() + posterior.kl()

    def decode():
        codec = proav_codec(2)
        latent = torch.randn(codec.latent_shape(1), device=META)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            codec.decode_frames(latent)
        return counter.get_total_flops()

    return Case("ProAV-DiT MDSA autoencoder (256 preset)", "proav_dit/autoencoder_256", cfg.optim.batch_size, 1,
                None, build, inputs, loss, decode=decode, checkpointing=cfg.model.gradient_checkpointing)


def stdit_formula(cfg, codec) -> tuple[float, float]:
    """ST-DiT, per sample: ``T = 6 n`` tokens (``n`` per plane), width ``d``, ``L`` blocks.
    Forward ``F = L (32 d^2 T + 4 d T (n + 6))``: per token and block, spatial and temporal
    attention projections ``2 x 8 d^2``, MLP ``16 d^2``; attention scores and values ``4 d n``
    (spatial, over a plane) + ``4 d 6`` (temporal, over the planes). Training
    ``3 F_linear + 3.5 F_attention`` (backward: 2x for a matmul, 2.5x for fused attention)."""
    m = cfg.model
    p = (m.patch, m.patch) if isinstance(m.patch, int) else tuple(m.patch)
    n = (codec.side // p[0]) * (codec.side // p[1])
    t, d, depth = 6 * n, m.hidden_size, m.depth
    linear, attn = depth * 32 * d * d * t, depth * 4 * d * t * (n + 6)
    return linear + attn, 3 * linear + 3.5 * attn


def stdit_case(config: str, depth: int | None = None) -> Case:
    cfg = load_config(proav_config.DiTRecipe, PROAV / f"{config}.yaml")
    m = cfg.model
    codec = proav_codec(m.patch)

    def build(depth=depth):
        return STDiT(in_channels=codec.channels, side=codec.side, frames=6, patch=m.patch,
                     hidden_size=m.hidden_size, depth=depth or m.depth, num_heads=m.num_heads,
                     mlp_ratio=m.mlp_ratio, num_classes=9, class_dropout=m.class_dropout)

    def inputs(b, device=META):
        return (torch.randn(b, codec.channels, 6, codec.side, codec.side, device=device),
                torch.rand(b, 6, device=device), torch.zeros(b, dtype=torch.long, device=device))

    def loss(model, x, t, y):
        return (model(x, t, y) - x).square().mean()

    size = config.split("_")[-1]
    return Case(f"ProAV-DiT ST-DiT-{size} (256 preset)", f"proav_dit/{config}", cfg.optim.batch_size, 1, depth,
                build, inputs, loss, formula=lambda: stdit_formula(cfg, codec), checkpointing=m.gradient_checkpointing)


# ------------------------------------------------------------------ AV-DiT


def image_autoencoder_case() -> Case:
    cfg = load_config(av_config.AutoencoderRecipe, AVDIT / "autoencoder_256.yaml")
    d, m = cfg.data, cfg.model
    images = d.num_frames + cfg.audio_images

    def build(depth=None):
        return ImageAutoencoder(in_channels=3, latent_channels=m.latent_channels, hidden_channels=m.hidden_channels,
                                downsample=m.downsample, depth=m.depth, groups=m.groups)

    def inputs(b):
        return (torch.randn(b, 3, images, d.size, d.size, device=META),)

    def loss(model, x):
        return reconstruction_losses(model, x, d.num_frames, cfg.loss)["total"]

    def decode():
        with META:
            model = build()
        side = d.size // m.downsample
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.decode_frames(torch.randn(1, m.latent_channels, images, side, side, device=META))
        return counter.get_total_flops()

    return Case("AV-DiT image autoencoder (256)", "av_dit/autoencoder_256", cfg.optim.batch_size, 1, None,
                build, inputs, loss, decode=decode, checkpointing=m.gradient_checkpointing)


def av_dit_formula(cfg, dit: DiTConfig, frames: int, audio: int) -> tuple[float, float]:
    """AV-DiT, per sample: ``n = (32/2)^2 = 256`` tokens per image, ``T = (tv + ta) n`` over
    ``tv = 16`` frames and ``ta = 4`` audio images, ``Tv = tv n``, ``Ta = ta n``, ``L = 28``
    blocks of width ``d = 1152``, a fusion every ``k`` blocks. Forward ``F =`` frozen DiT
    ``L (24 d^2 T + 4 d n T)`` + temporal adapters ``L (8 d^2 Tv + 4 d tv Tv)`` + fusions
    ``(L / k) (8 d^2 (Tv + Ta) + 8 d Tv Ta)`` (LoRA and embedders are under 1 %). Training:
    the frozen matmuls need input gradients only (``2 F_frozen``), the adapters' weight
    gradients too (``3 F_adapters``); attention backward 2.5x."""
    m = cfg.model
    n = (dit.input_size // dit.patch_size) ** 2
    d, depth = dit.hidden_size, dit.depth
    tv, tt = frames * n, (frames + audio) * n
    ta = audio * n
    fusions = len(range(m.fusion_every - 1, depth, m.fusion_every))
    frozen_lin, frozen_attn = depth * 24 * d * d * tt, depth * 4 * d * n * tt
    adapt_lin, adapt_attn = depth * 8 * d * d * tv, depth * 4 * d * frames * tv
    fuse_lin, fuse_attn = fusions * 8 * d * d * (tv + ta), fusions * 8 * d * tv * ta
    forward = frozen_lin + frozen_attn + adapt_lin + adapt_attn + fuse_lin + fuse_attn
    train = 2 * frozen_lin + 3.5 * frozen_attn + 3 * (adapt_lin + fuse_lin) + 3.5 * (adapt_attn + fuse_attn)
    return forward, train


def av_dit_case(depth: int | None = None) -> Case:
    cfg = load_config(av_config.AVDiTRecipe, AVDIT / "av_dit_xl2.yaml")
    ae = load_config(av_config.AutoencoderRecipe, AVDIT / "autoencoder_256.yaml")
    side = ae.data.size // ae.model.downsample
    preset = DIT_PRESETS[cfg.dit_preset]
    dit = DiTConfig(input_size=side, in_channels=ae.model.latent_channels, num_classes=1000, learn_sigma=True,
                    **preset)
    frames, audio = ae.data.num_frames, ae.audio_images
    m = cfg.model

    def build(depth=depth):
        config = DiTConfig(**{**vars(dit), "depth": depth or dit.depth})
        model = AVDiT(dit=config, video_frames=frames, audio_images=audio, lora_targets=tuple(m.lora_targets),
                      lora_rank=m.lora_rank, lora_alpha=m.lora_alpha, bottleneck=m.bottleneck,
                      fusion_every=m.fusion_every, class_labels=m.class_labels, num_clip_classes=9,
                      class_dropout=m.class_dropout)
        model._check = lambda *inputs: None  # its label-range check reads values: meta has none
        return model

    def inputs(b):
        return (torch.randn(b, dit.in_channels, frames + audio, side, side, device=META),
                torch.randint(0, 1000, (b,), device=META), torch.zeros(b, dtype=torch.long, device=META))

    def loss(model, x, t, y):
        return (model(x, t, y) - x).square().mean()

    return Case("AV-DiT on DiT-XL/2 (256)", "av_dit/av_dit_xl2", cfg.optim.batch_size, 2, depth, build, inputs,
                loss, formula=lambda: av_dit_formula(cfg, dit, frames, audio), checkpointing=m.gradient_checkpointing)


# ------------------------------------------------------------------ counting


def parameters(model) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def train_flops(case: Case, model) -> int:
    with attention_backend("fused_count"), FlopCounterMode(display=False) as counter:
        case.loss(model, *case.inputs(1)).backward()
    return counter.get_total_flops()


def forward_flops(case: Case, model) -> int:
    """One training forward at batch 1 without gradients: what checkpointing recomputes."""
    with attention_backend("fused_count"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        case.loss(model, *case.inputs(1))
    return counter.get_total_flops()


def sample_flops(case: Case, model) -> int:
    """One denoiser call without gradients at the sampling batch."""
    with attention_backend("fused_count"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(*case.inputs(case.sample_batch))
    return counter.get_total_flops()


def saved_bytes(case: Case, model, batch: int, checkpointed: bool) -> int:
    """Bytes autograd keeps for the backward of one training forward at ``batch``."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[id(t)] = t.numel() * t.element_size()  # a tensor saved twice is held once
        return t

    with attention_backend("fused_count"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        case.loss(model, *case.inputs(batch))
    return sum(seen.values())


def checkpointed(model):
    """``model`` with the gradient checkpointing ``model.gradient_checkpointing=true`` gives it
    (:func:`recipes.common.speed.apply_speed`)."""
    return apply_speed(model, SpeedConfig(gradient_checkpointing=True))


def activation_memory(case: Case) -> dict[str, float]:
    """Per-sample saved bytes without and with checkpointing (see the module docstring)."""
    with META:
        plain = case.build()
    per_sample = saved_bytes(case, plain, 2, False) - saved_bytes(case, plain, 1, False)
    with META:
        ckpt = checkpointed(case.build())
    kept = saved_bytes(case, ckpt, 2, True) - saved_bytes(case, ckpt, 1, True)
    # the backward recomputes one unit (block, or AV-DiT layer) at a time: its own saved
    # tensors are there at once, on top of what the checkpoints keep
    with META:
        units = unit_bytes(case, case.build(), 2)
    with META:
        units1 = unit_bytes(case, case.build(), 1)
    return {"plain": per_sample, "checkpointed": kept + max(a - b for a, b in zip(units, units1, strict=True))}


def unit_bytes(case: Case, model, batch: int) -> list[int]:
    """Bytes saved inside each checkpointing unit of one training forward at ``batch``."""
    current: list[int | None] = [None]
    sizes: list[dict[int, int]] = []

    def pack(t):
        if current[0] is not None:
            sizes[current[0]][id(t)] = t.numel() * t.element_size()
        return t

    def inside(fn):
        def wrapped(*args, **kwargs):
            sizes.append({})
            current[0] = len(sizes) - 1
            try:
                return fn(*args, **kwargs)
            finally:
                current[0] = None
        return wrapped

    if isinstance(model, AVDiT):
        model._layer = inside(model._layer)
    else:
        blocks = list(model.blocks) if isinstance(model, STDiT) else [b for _, b in repeated_blocks(model)]
        for block in blocks:
            block.forward = inside(block.forward)
    with attention_backend("fused_count"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        case.loss(model, *case.inputs(batch))
    return [sum(s.values()) for s in sizes]


# ------------------------------------------------------------------ the CPU check


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def worker(spec: dict) -> dict:
    """One point of the CPU check: real tensors, fused CPU attention (SDPA), float32."""
    torch.set_num_threads(spec["threads"])
    case = stdit_case(spec["config"], depth=spec["depth"])
    torch.manual_seed(0)
    model = case.build()
    if spec["checkpointed"]:
        checkpointed(model)
    x, t, y = case.inputs(spec["batch"], device=torch.device("cpu"))
    for _ in range(2):  # the first allocates the gradients; the second is measured
        model.zero_grad(set_to_none=False)
        before = _status()["VmRSS"]
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        case.loss(model, x, t, y).backward()
        peak = _status()["VmHWM"] - before
    return {"peak": peak}


def cpu_check(config: str, threads: int) -> list[dict]:
    rows = []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "AVBLOCKS_TYPECHECK": "0"}
    for checkpointed in (False, True):
        for depth in (1, 2):
            point = {}
            for batch in (1, 2):
                spec = {"config": config, "depth": depth, "batch": batch, "checkpointed": checkpointed,
                        "threads": threads}
                done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                      capture_output=True, text=True, check=True, timeout=3600)
                point[batch] = json.loads(done.stdout.strip().splitlines()[-1])["peak"]
            case = stdit_case(config, depth=depth)
            counted = activation_memory(case)["checkpointed" if checkpointed else "plain"]
            rows.append({"depth": depth, "checkpointed": checkpointed, "measured": point[2] - point[1],
                         "counted": counted})
    return rows


# ------------------------------------------------------------------ report


def gib(x: float) -> str:
    return f"{x / 2**30:.2f}"


def report(args) -> str:
    cases = [mdsa_case(), stdit_case("dit_256_B"), stdit_case("dit_256_L"), image_autoencoder_case(),
             av_dit_case()]
    rate = args.mfu * args.matmul_tflops * 1e12
    lines = ["| model (config) | parameters (trained) | training FLOPs / sample: counted (formula) | "
             "sampling FLOPs / step: counted (formula) | activations / sample, GiB: plain / checkpointed | "
             f"H200 time / training step at {args.mfu:.0%} MFU (global batch; + the recomputed forward "
             "when the config checkpoints) |",
             "|---|---|---|---|---|---|"]
    details = {}
    for case in cases:
        with META:
            model = case.build()
        total, trained = parameters(model)
        train = train_flops(case, model)
        memory = activation_memory(case)
        formula = case.formula() if case.formula else None
        with META:
            recompute = forward_flops(case, case.build()) if case.checkpointing else 0
        step = (train + recompute) * case.batch_size / rate
        decode = sample = None
        if formula:
            with META:
                sample = sample_flops(case, case.build())
            f_sample = formula[0] * case.sample_batch
            train_cell = f"{train / 1e12:.2f} T ({formula[1] / 1e12:.2f} T, x{train / formula[1]:.3f})"
            sample_cell = f"{sample / 1e12:.3f} T ({f_sample / 1e12:.3f} T, x{sample / f_sample:.3f})"
        else:
            decode = case.decode()
            train_cell, sample_cell = f"{train / 1e12:.2f} T", f"decode of a clip: {decode / 1e12:.3f} T"
        ckpt = ", checkpointed" if case.checkpointing else ""
        lines.append(f"| {case.name} (`{case.config}`) | {total / 1e6:.1f} M ({trained / 1e6:.1f} M) | {train_cell} | "
                     f"{sample_cell} | {gib(memory['plain'])} / {gib(memory['checkpointed'])} | "
                     f"{step * 1e3:.0f} ms ({case.batch_size}{ckpt}) |")
        details[case.name] = {"parameters": total, "trained": trained, "train_flops_per_sample": train,
                              "sample_flops_per_step": sample, "formula": formula, "activations": memory,
                              "decode_flops": decode, "step_seconds": step, "recomputed_flops": recompute}
    text = "\n".join(lines) + "\n"
    text += ("\nSampling one clip (the denoiser calls of 25 steps: 49 for Heun, ProAV-DiT's sampler, 25 for "
             "AV-DiT's DDIM; then the decode, without the audio inverse), FLOPs and time at the same rate:\n\n")
    for name, calls in (("ProAV-DiT ST-DiT-B (256 preset)", 49), ("ProAV-DiT ST-DiT-L (256 preset)", 49),
                        ("AV-DiT on DiT-XL/2 (256)", 25)):
        sample = details[name]["sample_flops_per_step"]
        decoder = details["ProAV-DiT MDSA autoencoder (256 preset)" if "ProAV" in name else
                          "AV-DiT image autoencoder (256)"]["decode_flops"]
        flops = calls * sample + decoder
        text += f"- {name}: {calls} x {sample / 1e12:.3f} T + decode {decoder / 1e12:.3f} T = {flops / 1e12:.2f} " \
                f"TFLOP, {flops / rate * 1e3:.0f} ms\n"
    if args.check:
        rows = cpu_check("dit_256_B", args.threads)
        text += ("\nCounting checked on the CPU (ST-DiT-B cut to 1 and 2 blocks, float32, per sample = batch 2 "
                 "minus batch 1):\n\n| blocks | checkpointing | measured peak RSS, MiB | counted, MiB |\n|---|---|---|---|\n")
        for r in rows:
            text += (f"| {r['depth']} | {'yes' if r['checkpointed'] else 'no'} | {r['measured'] / 2**20:.0f} | "
                     f"{r['counted'] / 2**20:.0f} |\n")
    return text, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the CPU check of the memory count")
    parser.add_argument("--mfu", type=float, default=0.40)
    parser.add_argument("--matmul-tflops", type=float, default=790.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    text, details = report(args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(details, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
