"""Devices and precision, decided without a GPU: what ``run.device`` means, autocast per
precision, how DDP / FSDP2 / the process group are set up for a CUDA rank, where noise is
drawn, and that no recipe or pipeline module names a device type outside the one resolver."""

import ast
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from avblocks import device as D
from avblocks.device import HOST
from recipes.common import distributed as dist_utils
from recipes.common.distributed import DistContext
from recipes.common.distributed.wrapping import FSDPPlan

ROOT = Path(__file__).resolve().parents[1]
GPU1 = torch.device("cuda", 1)

# ------------------------------------------------------------------ run.device


@pytest.mark.parametrize("name, rank, count, expected", [
    ("auto", 0, 0, HOST),                      # no CUDA: the CPU
    ("auto", 0, 1, torch.device("cuda", 0)),
    ("auto", 3, 4, torch.device("cuda", 3)),   # under torchrun: this rank's GPU
    ("cpu", 2, 4, HOST),                       # asked for: the CPU even with GPUs there
    (" CPU ", 0, 0, HOST),
    ("cuda", 2, 4, torch.device("cuda", 2)),   # "cuda" = this rank's GPU
    ("cuda:1", 0, 2, GPU1),                    # an explicit index wins over LOCAL_RANK
    (torch.device("cuda", 1), 0, 2, GPU1),
    (HOST, 0, 8, HOST),
])
def test_device_names_resolve(name, rank, count, expected):
    assert D.resolve_device(name, local_rank=rank, cuda_count=count) == expected


def test_auto_follows_local_rank_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert D.resolve_device("auto", cuda_count=4) == torch.device("cuda", 3)
    assert D.resolve_device("cuda", cuda_count=4) == torch.device("cuda", 3)
    monkeypatch.delenv("LOCAL_RANK")
    assert D.resolve_device("auto", cuda_count=4) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "two")
    with pytest.raises(ValueError, match=r"LOCAL_RANK \('two'\)"):
        D.resolve_device("auto", cuda_count=4)


@pytest.mark.parametrize("name, count, match", [
    ("tpu", 1, r"device 'tpu' is not known: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("gpu", 1, r"'gpu' is not known"),
    ("cuda:x", 1, r"'cuda:x' is not known"),
    ("cuda:-1", 1, r"'cuda:-1' is not known"),
    ("mps", 0, r"'mps' is not known"),
    ("", 0, r"device '' is not known"),
    (3, 1, r"device 3 is not a device name"),
    ("cuda", 0, r"device 'cuda' asks for CUDA, but PyTorch sees no CUDA device"),
    ("cuda:0", 0, r"asks for CUDA"),
    ("cuda:4", 2, r"'cuda:4' \(index 4\) names a GPU this process cannot see: 2 visible"),
])
def test_bad_devices_are_refused_naming_the_value(name, count, match):
    with pytest.raises(ValueError, match=match):
        D.resolve_device(name, local_rank=0, cuda_count=count)


def test_more_ranks_than_gpus_is_refused():
    with pytest.raises(ValueError, match=r"LOCAL_RANK 2\) names a GPU this process cannot see: 2 visible"):
        D.resolve_device("auto", local_rank=2, cuda_count=2)


def test_a_bad_run_device_stops_the_trainer_before_anything_is_written(tmp_path):
    from avblocks.config import ConfigError
    from recipes.common.config import load_config
    from recipes.common.loop import start_run
    from recipes.proav_dit.config import AutoencoderRecipe
    from recipes.proav_dit.train_autoencoder import validate

    out = tmp_path / "run"
    cfg = load_config(AutoencoderRecipe, None, [f"run.output_dir={out}", "run.device=tpu"])
    with pytest.raises(ConfigError, match=r"^run.device: device 'tpu' is not known"):
        start_run(cfg, validate)
    assert not out.exists()


# ------------------------------------------------------------------ precision


@pytest.mark.parametrize("device, precision, expected", [
    (HOST, "fp32", {"device_type": "cpu", "enabled": False}),
    (HOST, "bf16", {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": True}),
    (GPU1, "bf16", {"device_type": "cuda", "dtype": torch.bfloat16, "enabled": True}),
    (GPU1, "fp16", {"device_type": "cuda", "dtype": torch.float16, "enabled": True}),
    ("cuda:0", "fp32", {"device_type": "cuda", "enabled": False}),
])
def test_autocast_runs_on_the_devices_type_in_the_asked_dtype(device, precision, expected):
    settings = D.autocast_settings(device, precision)
    assert {k: settings[k] for k in expected} == expected


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_autocast_gives_the_precisions_dtype_on_the_cpu(precision, dtype):
    layer = torch.nn.Linear(4, 4)
    with D.autocast(HOST, precision):
        assert layer(torch.randn(2, 4)).dtype == dtype


def test_only_fp16_scales_the_loss_and_bad_precisions_are_refused():
    assert [D.grad_scaler(HOST, p).is_enabled() for p in ("fp32", "bf16", "fp16")] == [False, False, True]
    for bad in ("fp8", "bfloat16", "FP16"):
        with pytest.raises(ValueError, match=f"precision '{bad}' is not known"):
            D.autocast_settings(HOST, bad)


def test_tf32_is_set_for_cuda_devices_and_the_cpu_is_left_alone():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        assert D.configure_matmul(HOST) is False
        assert matmul.allow_tf32 is False and cudnn.allow_tf32 is False
        assert D.configure_matmul(GPU1) is True
        assert matmul.allow_tf32 is True and cudnn.allow_tf32 is True
        assert D.configure_matmul(GPU1, tf32=False) is False
        assert matmul.allow_tf32 is False
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def test_batches_move_with_their_structure_and_stay_put_when_already_there():
    x, y = torch.randn(2, 3), torch.arange(2)
    batch = {"video": x, "parts": [y, (x, "name")], "label": 3}
    moved = D.to_device(batch, HOST)
    assert moved["video"] is x and moved["parts"][0] is y and moved["parts"][1] == (x, "name")
    assert moved["label"] == 3 and isinstance(moved["parts"][1], tuple)
    meta = D.to_device(batch, torch.device("meta"))
    assert meta["video"].device.type == "meta" and meta["parts"][1][0].device.type == "meta"
    assert meta["parts"][1][1] == "name"


def test_backend_and_pinning_follow_the_device(monkeypatch):
    assert D.process_group_backend(GPU1) == "nccl" and D.process_group_backend(HOST) == "gloo"
    assert D.pin_memory(GPU1) and not D.pin_memory(HOST)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert D.collective_device("nccl") == torch.device("cuda", 3)
    assert D.collective_device("gloo") == HOST


# ------------------------------------------------------------------ ranks on their devices


def test_ddp_gets_device_ids_only_for_a_cuda_module():
    assert dist_utils.ddp_arguments(GPU1) == {"device_ids": [1], "output_device": 1}
    assert dist_utils.ddp_arguments(HOST) == {"device_ids": None, "output_device": None}


def test_fsdp_shards_over_the_ranks_device_type_with_bf16_when_asked():
    ctx = DistContext(rank=1, world_size=4, local_rank=1, device=GPU1)
    assert dist_utils.fsdp_plan(ctx, "bf16") == FSDPPlan("cuda", 4, torch.bfloat16, torch.float32)
    assert dist_utils.fsdp_plan(ctx, "fp32") == FSDPPlan("cuda", 4)
    cpu = DistContext(rank=0, world_size=2, local_rank=0)
    assert dist_utils.fsdp_plan(cpu, "bf16").mesh_device_type == "cpu"


def test_a_model_elsewhere_than_the_ranks_device_is_refused_before_wrapping():
    ctx = DistContext(rank=1, world_size=2, local_rank=1, device=GPU1)
    with pytest.raises(ValueError, match=r"rank 1 computes on cuda:1, but the model's tensors are on \['cpu'\]"):
        dist_utils.wrap_model(torch.nn.Linear(2, 2), ctx, "ddp")


@pytest.mark.parametrize("device, backend, bound", [(GPU1, "nccl", GPU1), (HOST, "gloo", None)])
def test_the_process_group_is_joined_on_the_ranks_device(monkeypatch, device, backend, bound):
    calls = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda b, **kw: calls.update(backend=b, **kw))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.update(set_device=d))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    ctx = dist_utils.init_distributed(device=device)
    assert ctx == DistContext(rank=1, world_size=2, local_rank=1, device=device)
    assert calls["backend"] == backend and calls["rank"] == 1 and calls["world_size"] == 2
    assert calls.get("device_id") == bound and calls.get("set_device") == bound


# ------------------------------------------------------------------ noise where the model is


class _Stop(Exception):
    pass


@pytest.mark.parametrize("build", ["proav_pipeline", "av_dit_pipeline"])
def test_pipelines_draw_noise_with_a_generator_on_the_models_device(monkeypatch, build):
    import avblocks.pipelines.av_dit as av_module
    import avblocks.pipelines.proav_dit as proav_module
    from tests import test_pipelines

    pipe = getattr(test_pipelines, build)()
    seen = []

    def record(device, seed):
        seen.append((torch.device(device), seed))
        raise _Stop

    for module in (proav_module, av_module):
        monkeypatch.setattr(module, "seeded_generator", record)
    monkeypatch.setattr(type(pipe), "device", property(lambda self: GPU1))
    with pytest.raises(_Stop):
        pipe(labels=[0], seed=7, progress=False)
    assert seen == [(GPU1, 7)]


def test_generators_are_made_on_the_given_device_with_the_cpus_stream_there():
    from recipes.read_a2v.train import step_generator

    g = D.seeded_generator(HOST, 5)
    assert g.device == HOST and torch.equal(torch.rand(3, generator=g),
                                            torch.rand(3, generator=torch.Generator().manual_seed(5)))
    assert step_generator(2, 9, HOST).device == HOST
    with pytest.raises(RuntimeError):  # a generator really is made on the device asked for
        D.seeded_generator(torch.device("meta"), 0)


# ------------------------------------------------------------------ one place names devices

DEVICE_LITERAL = re.compile(r"^(cpu|cuda|mps|xpu|meta|hip)(:\d+)?$", re.IGNORECASE)
SCANNED = [*sorted((ROOT / "recipes").rglob("*.py")), *sorted((ROOT / "avblocks" / "pipelines").rglob("*.py"))]


def device_literals(path: Path) -> list[str]:
    """String constants that are a device spec, and moves written as ``x.cuda()``, in one
    source file (docstrings are prose: only a whole constant that is a device name counts)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and DEVICE_LITERAL.match(node.value):
            found.append(f"{path.name}:{node.lineno}: {node.value!r}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cuda"
                and not node.args):
            found.append(f"{path.name}:{node.lineno}: .cuda()")
    return found


def test_no_recipe_or_pipeline_module_names_a_device_type():
    assert len(SCANNED) > 30  # the recipes and the pipelines are really read
    found = [hit for path in SCANNED for hit in device_literals(path)]
    assert not found, "name devices through avblocks.device only:\n" + "\n".join(found)


def test_the_literal_scan_finds_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('import torch\nx = torch.zeros(1, device="cuda:0")\ny = x.cuda()\nz = "cpu"\n'
                     '"""cpu in a docstring, "cpu" quoted, is prose"""\n')
    assert sorted(h.split(": ", 1)[1] for h in device_literals(probe)) == ["'cpu'", "'cuda:0'", ".cuda()"]
