"""optim.precision and the model sections' speed fields, through the real trainers on the CPU:
bf16 / fp16 autocast (fp16 with a checkpointed loss scale that resumes exactly), gradient
checkpointing (same losses), attention backends (the math reference agrees, what cannot
train here is refused before anything is written), regional compile (slow)."""

import json
from pathlib import Path

import pytest
import torch

from avblocks.config import ConfigError
from avblocks.device import HOST
from recipes.common.config import load_config
from recipes.common.speed import SpeedConfig, check_sections
from recipes.proav_dit import train_autoencoder, train_dit
from recipes.proav_dit.config import AutoencoderRecipe, DiTRecipe
from tests.test_loading import AE  # the tiny autoencoder run

DIT = ["model.hidden_size=32", "model.depth=2", "model.num_heads=2", "optim.steps=3",
       "optim.batch_size=4", "optim.warmup=1", "run.checkpoint_every=3", "run.log_every=1",
       "run.progress=false"]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["total"] for line in (out / "log.jsonl").read_text().splitlines()]


def ae(out: Path, *extra: str) -> list[float]:
    train_autoencoder.main([*AE, f"run.output_dir={out}", *extra])
    return losses(out)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> list[float]:
    return ae(tmp_path_factory.mktemp("fp32"))


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("autoencoder")
    train_autoencoder.main([*AE, f"run.output_dir={out}", "optim.steps=2"])
    return out


def test_bf16_autocast_trains_close_to_fp32_but_not_in_fp32(tmp_path, fp32):
    bf16 = ae(tmp_path, "optim.precision=bf16")
    assert bf16 != fp32  # the matmuls really ran in bf16
    assert bf16[0] == pytest.approx(fp32[0], rel=0.05)


def test_fp16_checkpoints_its_loss_scale_and_resumes_exactly(tmp_path, fp32):
    first = ae(tmp_path, "optim.precision=fp16")
    assert first != fp32 and first[0] == pytest.approx(fp32[0], rel=0.05)
    state = torch.load(tmp_path / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert state["grad_scaler"]["scale"] > 0
    (tmp_path / "checkpoints" / "step_00000004.pt").unlink()
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    (tmp_path / "log.jsonl").write_text("".join(line + "\n" for line in log[:2]))
    assert ae(tmp_path, "optim.precision=fp16") == first


def test_the_old_bf16_switch_is_refused_naming_it():
    with pytest.raises(ConfigError, match="bf16"):
        load_config(AutoencoderRecipe, None, ["optim.bf16=true"])
    with pytest.raises(ConfigError, match="fp8"):
        load_config(AutoencoderRecipe, None, ["optim.precision=fp8"])


def test_gradient_checkpointing_gives_the_same_losses(tmp_path, fp32):
    assert ae(tmp_path, "model.gradient_checkpointing=true") == fp32


def test_the_math_attention_backend_agrees_with_sdpa(tmp_path, autoencoder):
    sdpa = train_dit.main([*DIT, f"autoencoder={autoencoder}", f"run.output_dir={tmp_path / 'sdpa'}"])
    math = train_dit.main([*DIT, f"autoencoder={autoencoder}", f"run.output_dir={tmp_path / 'math'}",
                           "model.attention_backend=math"])
    assert losses(tmp_path / "math") == pytest.approx(losses(tmp_path / "sdpa"), rel=1e-4)
    assert sdpa["steps"] == math["steps"] == 3


@pytest.mark.parametrize("override, match", [
    ("model.attention_backend=flex", r"model.attention_backend \(flex\) cannot train on cpu"),
    ("model.attention_backend=xformers", r"model.attention_backend \('xformers'\) must be one of"),
])
def test_what_an_attention_backend_cannot_do_is_refused_before_anything_is_written(tmp_path, autoencoder,
                                                                                    override, match):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=match):
        train_dit.main([*DIT, f"autoencoder={autoencoder}", f"run.output_dir={out}", override])
    assert not out.exists()


def test_fp16_is_refused_under_fsdp_and_bf16_is_not():
    cfg = load_config(DiTRecipe, None, ["optim.precision=fp16"])
    with pytest.raises(ConfigError, match=r"optim.precision \(fp16\) with run.parallel=fsdp"):
        check_sections(cfg, HOST, sharded=True)
    check_sections(cfg, HOST, sharded=False)
    check_sections(load_config(DiTRecipe, None, ["optim.precision=bf16"]), HOST, sharded=True)
    assert isinstance(cfg.model, SpeedConfig)


@pytest.mark.slow
def test_regional_compile_trains_like_eager(tmp_path, autoencoder):
    train_dit.main([*DIT, f"autoencoder={autoencoder}", f"run.output_dir={tmp_path / 'eager'}"])
    train_dit.main([*DIT, f"autoencoder={autoencoder}", f"run.output_dir={tmp_path / 'compiled'}",
                    "model.compile=true", "model.gradient_checkpointing=true"])
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4)


def test_av_dit_layer_checkpointing_keeps_outputs_and_gradients():
    from tests.test_pipelines import av_dit_pipeline

    model = av_dit_pipeline().denoiser.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 10, 4, 4, generator=g)
    t, y = torch.tensor([10, 500]), torch.tensor([0, 3])

    def run():
        torch.manual_seed(1)  # label dropout draws: the same in both runs
        model.zero_grad(set_to_none=True)
        out = model(x, t, y)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_out, plain_grads = run()
    model.gradient_checkpointing = True
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        model(x, t, y)
    ckpt_out, ckpt_grads = run()
    assert torch.equal(ckpt_out, plain_out) and plain_grads.keys() == ckpt_grads.keys() and plain_grads
    assert all(torch.allclose(ckpt_grads[n], plain_grads[n], rtol=1e-5, atol=1e-7) for n in plain_grads)
    model.gradient_checkpointing = False
    everything = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: everything.append(t.numel()) or t, lambda t: t):
        model(x, t, y)
    assert sum(saved) < sum(everything) / 2  # the layers' insides are not kept


def test_a_pipeline_folder_records_its_step_cache_default(tmp_path):
    from avblocks.pipelines import FlowSampling, Pipeline
    from tests.test_pipelines import proav_pipeline

    pipe = proav_pipeline()
    options = dict(labels=[0, 1], steps=4, seed=0, progress=False)
    plain = pipe(**options).video
    pipe.sampling = FlowSampling(step_cache="teacache", cache_threshold=1e9)  # skips whenever it may
    pipe.save_pretrained(tmp_path / "pipeline")
    loaded = Pipeline.from_pretrained(tmp_path / "pipeline")
    assert loaded.sampling == pipe.sampling
    assert not torch.equal(loaded(**options).video, plain)  # the folder's cache applied by default
    assert torch.equal(loaded(**options, step_cache=False).video, plain)  # and switched off per call
    assert torch.equal(loaded(**options, cache_threshold=0.0).video, plain)  # threshold 0 never skips


def test_the_gpu_check_says_why_it_skips_without_a_gpu():
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device here" in done.stdout and "nothing checked" in done.stdout


@pytest.mark.slow
def test_the_gpu_checks_plumbing_passes_on_the_cpu(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--out", str(tmp_path),
                           "--skip", "compile", "flex", "throughput", "sampling"], cwd=root, capture_output=True,
                          text=True, timeout=3000)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not [r for r in rows if r["status"] == "FAIL"]
    assert {r["section"] for r in rows} >= {"recipes", "torchrun"}
